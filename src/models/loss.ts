import * as tf from '@tensorflow/tfjs';

/** The training loss: softmax cross-entropy, or mean squared error between logits and one-hot targets. */
export function lossOf(kind: 'xent' | 'mse', logits: tf.Tensor, labels: Int32Array | tf.Tensor1D, numClasses: number): tf.Scalar {
  return tf.tidy(() => {
    const y = tf.oneHot(labels instanceof tf.Tensor ? labels : tf.tensor1d(labels, 'int32'), numClasses);
    return (kind === 'xent' ? tf.losses.softmaxCrossEntropy(y, logits) : tf.losses.meanSquaredError(y, logits)) as tf.Scalar;
  });
}
