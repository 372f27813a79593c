import * as tf from '@tensorflow/tfjs';
import { lossOf, smoothedTargets } from './loss';

/**
 * What a training step minimises and how it reads a prediction at the run's
 * level, from the network's outputs (the primary head's logits first, then
 * the extra heads' of a multi-level network). Three kinds:
 * - plain: the loss of the primary head against the run's labels;
 * - coarsened (`finetune.head: coarsen`): the primary head stays fine; its
 *   softmax is summed over the fine classes under each class of the run's
 *   (coarser) level, and the loss is the cross-entropy of that coarsened
 *   distribution, the training-time twin of DESIGN.md's "Scoring at coarser
 *   levels";
 * - multi-level (`train.level` as a list; Ridnik et al. 2021's "semantic
 *   softmax"): a weighted sum of each head's loss against the labels of its
 *   level.
 */
export interface Objective {
  /** Mean loss over the batch; `labels` [B] are class indices at the run's (primary) level. */
  loss(outputs: readonly tf.Tensor[], labels: tf.Tensor1D): tf.Scalar;
  /** Predicted class at the run's level, [B] int32. */
  predict(outputs: readonly tf.Tensor[]): tf.Tensor1D;
}

export function plainObjective(kind: 'xent' | 'mse', numClasses: number, smoothing = 0): Objective {
  return {
    loss: (out, y) => lossOf(kind, out[0], y, numClasses, smoothing),
    predict: (out) => out[0].argMax(1) as tf.Tensor1D,
  };
}

/** A [K_fine x K_coarse] 0/1 matrix: fine class j belongs to coarse class map[j]. */
export function coarsenMembership(map: Int32Array, kCoarse: number): tf.Tensor2D {
  const m = new Float32Array(map.length * kCoarse);
  map.forEach((c, j) => (m[j * kCoarse + c] = 1));
  return tf.tensor2d(m, [map.length, kCoarse]);
}

/**
 * log p_coarse [B x K_coarse] from fine logits [B x K_fine]:
 * log sum_{j in c} softmax_j = log sum_{j in c} exp(z_j - max) - log sum_j exp(z_j - max),
 * computed with the row maximum subtracted (no overflow); a coarse class whose
 * members all underflow gets log(1e-30) rather than -Infinity.
 */
export function coarsenedLogProbs(logits: tf.Tensor, member: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const e = logits.sub(logits.max(1, true)).exp() as tf.Tensor2D;
    const s = e.matMul(member);
    return s.maximum(1e-30).log().sub(e.sum(1, true).log()) as tf.Tensor2D;
  });
}

/**
 * finetune.head: coarsen. `map`: the coarse class of each fine class of the
 * kept head; loss = -mean sum_c t_c log p_coarse,c with t the (smoothed)
 * one-hot coarse targets; prediction = argmax of p_coarse. Call `dispose` when
 * the run ends (the membership matrix is a tensor).
 */
export function coarsenedObjective(map: Int32Array, kCoarse: number, smoothing = 0): Objective & { dispose(): void } {
  const member = coarsenMembership(map, kCoarse);
  return {
    loss: (out, y) =>
      tf.tidy(() => {
        const logP = coarsenedLogProbs(out[0], member);
        return logP.mul(smoothedTargets(y, kCoarse, smoothing)).sum(1).mean().neg() as tf.Scalar;
      }),
    predict: (out) => tf.tidy(() => coarsenedLogProbs(out[0], member).argMax(1) as tf.Tensor1D),
    dispose: () => member.dispose(),
  };
}

/** One head of a multi-level objective: its class count, its labels from the primary level's (null = the primary head itself), its weight. */
export interface LevelHead {
  numClasses: number;
  map: Int32Array | null;
  weight: number;
}

/**
 * train.level as a list: sum over heads of weight_h / sum(weights) x loss_h,
 * where head h's labels are map_h[primary label] (each listed level is a
 * coarsening of the first). Predictions are the primary head's.
 */
export function multiLevelObjective(kind: 'xent' | 'mse', heads: readonly LevelHead[], smoothing = 0): Objective & { dispose(): void } {
  const total = heads.reduce((a, h) => a + h.weight, 0);
  const maps = heads.map((h) => (h.map ? tf.tensor1d(h.map, 'int32') : null));
  return {
    loss: (out, y) =>
      tf.tidy(() => {
        let sum: tf.Tensor = tf.scalar(0);
        heads.forEach((h, i) => {
          const yh = maps[i] ? (tf.gather(maps[i]!, y) as tf.Tensor1D) : y;
          sum = sum.add(lossOf(kind, out[i], yh, h.numClasses, smoothing).mul(h.weight / total));
        });
        return sum as tf.Scalar;
      }),
    predict: (out) => out[0].argMax(1) as tf.Tensor1D,
    dispose: () => tf.dispose(maps.filter((m): m is tf.Tensor1D => m !== null)),
  };
}
