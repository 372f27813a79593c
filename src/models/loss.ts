import * as tf from '@tensorflow/tfjs';

/**
 * One-hot targets with label smoothing (Szegedy et al. 2016, "Rethinking the
 * Inception Architecture"): (1 - eps) on the true class plus eps / K on every
 * class, so each row still sums to 1. eps = 0 is the plain one-hot.
 */
export function smoothedTargets(labels: Int32Array | tf.Tensor1D, numClasses: number, smoothing = 0): tf.Tensor2D {
  return tf.tidy(() => {
    const y = tf.oneHot(labels instanceof tf.Tensor ? labels : tf.tensor1d(labels, 'int32'), numClasses).toFloat() as tf.Tensor2D;
    return smoothing > 0 ? (y.mul(1 - smoothing).add(smoothing / numClasses) as tf.Tensor2D) : y;
  });
}

/**
 * The training loss, a scalar mean over the batch: softmax cross-entropy, or
 * mean squared error between logits and the targets. Targets are one-hot,
 * smoothed by `smoothing` (train.label_smoothing) when it is above 0.
 */
export function lossOf(kind: 'xent' | 'mse', logits: tf.Tensor, labels: Int32Array | tf.Tensor1D, numClasses: number, smoothing = 0): tf.Scalar {
  return tf.tidy(() => {
    const y = smoothedTargets(labels, numClasses, smoothing);
    return (kind === 'xent' ? tf.losses.softmaxCrossEntropy(y, logits) : tf.losses.meanSquaredError(y, logits)) as tf.Scalar;
  });
}
