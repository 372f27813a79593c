import { Rng } from '../util/rng';

/**
 * Feature alignment (DESIGN.md): the mean over true features of the best cosine
 * between a learned filter and the feature. Read it against `alignRandom`, the
 * same statistic for random unit directions: many random filters in a small
 * space already reach a sizeable best cosine by chance.
 */
export function alignment(filters: Float32Array, dim: number, m: number, features: Float32Array): number {
  // filters is [dim x m] (a filter per column); features [count x dim].
  const count = features.length / dim;
  const norms = new Float64Array(m);
  for (let j = 0; j < m; j++) {
    let s = 0;
    for (let i = 0; i < dim; i++) s += filters[i * m + j] ** 2;
    norms[j] = Math.sqrt(s) || 1;
  }
  let total = 0;
  for (let f = 0; f < count; f++) {
    let fn = 0;
    for (let i = 0; i < dim; i++) fn += features[f * dim + i] ** 2;
    fn = Math.sqrt(fn) || 1;
    let best = -Infinity;
    for (let j = 0; j < m; j++) {
      let dot = 0;
      for (let i = 0; i < dim; i++) dot += filters[i * m + j] * features[f * dim + i];
      best = Math.max(best, dot / (norms[j] * fn));
    }
    total += best;
  }
  return count ? total / count : NaN;
}

/** Random unit directions [count x dim], seeded. */
export function randomDirections(count: number, dim: number, seed: number): Float32Array {
  const rng = new Rng(seed, 907);
  return Float32Array.from({ length: count * dim }, () => rng.normal());
}
