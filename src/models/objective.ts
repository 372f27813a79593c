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

/**
 * The members of each coarse class as a gather index: [K_coarse x M] int32,
 * row c listing the fine classes j with map[j] = c, padded to the largest
 * class size M with K_fine (the index of a padding column that
 * coarsenedLogProbs appends). `map`: the coarse class of each fine class.
 */
export function coarsenMembership(map: Int32Array, kCoarse: number): tf.Tensor2D {
  const rows: number[][] = Array.from({ length: kCoarse }, () => []);
  map.forEach((c, j) => rows[c].push(j));
  const width = Math.max(1, ...rows.map((r) => r.length));
  const idx = new Int32Array(kCoarse * width).fill(map.length);
  rows.forEach((r, c) => idx.set(r, c * width));
  return tf.tensor2d(idx, [kCoarse, width], 'int32');
}

/** Logit of the padding column: exp of it minus any real logit is 0 in float32, and no gradient reaches it. */
const PAD_LOGIT = -1e9;

/**
 * log p_coarse [B x K_coarse] from fine logits [B x K_fine]:
 * log p_c = logsumexp_{j in c} z_j - logsumexp_j z_j, each log-sum-exp
 * shifted by its own maximum, so it is exact (no clamp) and its gradient is
 * the softmax within the class minus the softmax overall even when class c's
 * probability underflows float32 (logits [120, 0, 0], true class {1, 2}: loss
 * 120 - log 2, gradient [1, -0.5, -0.5]). `member`: coarsenMembership's
 * index. Memory B x K_coarse x M.
 */
export function coarsenedLogProbs(logits: tf.Tensor, member: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const b = logits.shape[0];
    const [kc, width] = member.shape;
    const padded = tf.concat([logits, tf.fill([b, 1], PAD_LOGIT)], 1);
    const grouped = tf.gather(padded, member.reshape([kc * width]), 1).reshape([b, kc, width]);
    return tf.logSumExp(grouped, 2).sub(tf.logSumExp(logits, 1, true)) as tf.Tensor2D;
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
 * The part multiLevelObjective and semanticSoftmaxObjective share: per head h,
 * its labels map_h[primary label] (the primary labels when map_h is null),
 * loss = sum_h headLoss(logits_h [B x K_h], labels_h [B], h) (each term
 * weighted by headLoss itself), predictions = argmax of the primary head
 * (outputs[0]); `dispose` frees the label maps.
 */
function perHeadObjective(
  heads: readonly LevelHead[],
  headLoss: (logits: tf.Tensor, labels: tf.Tensor1D, head: LevelHead) => tf.Scalar,
): Objective & { dispose(): void } {
  const maps = heads.map((h) => (h.map ? tf.tensor1d(h.map, 'int32') : null));
  return {
    loss: (out, y) =>
      tf.tidy(() => {
        let sum: tf.Tensor = tf.scalar(0);
        heads.forEach((h, i) => {
          const yh = maps[i] ? (tf.gather(maps[i]!, y) as tf.Tensor1D) : y;
          sum = sum.add(headLoss(out[i], yh, h));
        });
        return sum as tf.Scalar;
      }),
    predict: (out) => out[0].argMax(1) as tf.Tensor1D,
    dispose: () => tf.dispose(maps.filter((m): m is tf.Tensor1D => m !== null)),
  };
}

/**
 * train.level as a list: sum over heads of weight_h / sum(weights) x loss_h,
 * where head h's labels are map_h[primary label] (each listed level is a
 * coarsening of the first). Predictions are the primary head's.
 */
export function multiLevelObjective(kind: 'xent' | 'mse', heads: readonly LevelHead[], smoothing = 0): Objective & { dispose(): void } {
  const total = heads.reduce((a, h) => a + h.weight, 0);
  return perHeadObjective(heads, (logits, yh, h) =>
    lossOf(kind, logits, yh, h.numClasses, smoothing).mul(h.weight / total) as tf.Scalar,
  );
}

/**
 * train.multi_level: semantic_softmax (Ridnik et al. 2021, "ImageNet-21K
 * Pretraining for the Masses", their SemanticSoftMaxLoss): one softmax
 * cross-entropy per head, head h over the classes at its depth, with labels
 * map_h[primary label]; an example whose class is shallower than head h's
 * depth (map_h = -1) is masked out of that head's loss. Loss =
 * sum_h w_h x (sum over the batch of the unmasked examples' cross-entropy) / B,
 * weights as given (not normalised; Ridnik et al.'s depth weighting by
 * default, train/heads.ts semanticSoftmaxWeights). Targets are smoothed by
 * `smoothing`. Predictions are the primary head's.
 */
export function semanticSoftmaxObjective(heads: readonly LevelHead[], smoothing = 0): Objective & { dispose(): void } {
  return perHeadObjective(heads, (logits, yh, h) => {
    const valid = yh.greaterEqual(0).toFloat();
    const t = smoothedTargets(yh.maximum(tf.scalar(0, 'int32')) as tf.Tensor1D, h.numClasses, smoothing);
    const xent = tf.logSoftmax(logits).mul(t).sum(1).neg().mul(valid);
    return xent.sum().div(yh.shape[0]).mul(h.weight) as tf.Scalar;
  });
}
