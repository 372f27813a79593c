/**
 * Accuracy at the trained level and at every coarser one. Pure functions on
 * row-major probability matrices: no tensors.
 */

export function argmaxRows(probs: Float32Array, k: number): Int32Array {
  const n = probs.length / k;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    let bv = -Infinity;
    for (let j = 0; j < k; j++) {
      const v = probs[i * k + j];
      if (v > bv) {
        bv = v;
        best = j;
      }
    }
    out[i] = best;
  }
  return out;
}

/** Fraction correct over the rows where `mask` is true (all rows without a mask); NaN if none. */
export function accuracy(pred: Int32Array, labels: Int32Array, mask?: (i: number) => boolean): number {
  let hit = 0;
  let n = 0;
  for (let i = 0; i < pred.length; i++) {
    if (mask && !mask(i)) continue;
    n++;
    if (pred[i] === labels[i]) hit++;
  }
  return n ? hit / n : NaN;
}

/** Top-k accuracy: the label is among the k largest probabilities. */
export function topkAccuracy(probs: Float32Array, k: number, labels: Int32Array, top: number): number {
  const n = labels.length;
  let hit = 0;
  for (let i = 0; i < n; i++) {
    const own = probs[i * k + labels[i]];
    let above = 0;
    for (let j = 0; j < k; j++) if (probs[i * k + j] > own) above++;
    if (above < top) hit++;
  }
  return n ? hit / n : NaN;
}

/**
 * Scoring at a coarser level (DESIGN.md): sum the predicted probabilities of the
 * fine classes under each coarse class; the argmax of the sums is the prediction.
 */
export function coarsenProbs(probs: Float32Array, kFine: number, map: Int32Array, kCoarse: number): Float32Array {
  const n = probs.length / kFine;
  const out = new Float32Array(n * kCoarse);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < kFine; j++) out[i * kCoarse + map[j]] += probs[i * kFine + j];
  }
  return out;
}
