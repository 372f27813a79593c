/**
 * LayerNorm over the last axis (Ba et al. 2016; nn.LayerNorm):
 * y = (x - mean) / sqrt(var + epsilon) * gamma + beta, var the biased
 * variance of each row. Two implementations of the same definition:
 * - On a backend with the native kernels (Capabilities.fusedLayerNorm:
 *   GranularLayerNorm and its gradient, the `native` backend): one kernel
 *   forward, one backward, which keep only x and each row's mean and
 *   1/sigma for the backward pass (as PyTorch's native_layer_norm does):
 *   dx = 1/sigma * (g - mean(g) - x_hat * mean(g * x_hat)), g = dy * gamma;
 *   dgamma = sum dy * x_hat; dbeta = sum dy (sums over every row).
 * - Elsewhere: composed from moments, sub, mul, rsqrt and add, whose
 *   op-by-op gradient tfjs derives (six kernels forward, about twenty back).
 */
import * as tf from '@tensorflow/tfjs';
import { engineCapabilities, LAYER_NORM, LAYER_NORM_GRAD } from '../engine';

/**
 * LayerNorm of `x` [..., D] with `gamma`, `beta` [D]; returns x's shape.
 * Runs as the fused kernels where the backend has them (see the file
 * comment), else as composed tfjs ops; differentiable either way.
 */
export function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: number): tf.Tensor {
  if (engineCapabilities().fusedLayerNorm && x.dtype === 'float32') return fusedLayerNorm(x, gamma, beta, epsilon);
  return composedLayerNorm(x, gamma, beta, epsilon);
}

/** The composed ops (every backend). */
export function composedLayerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: number): tf.Tensor {
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, epsilon))), gamma), beta);
  });
}

/** The fused kernels' op: one kernel forward, one backward. */
function fusedLayerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: number): tf.Tensor {
  const op = tf.customGrad((...args: unknown[]) => {
    const [xi, g, b] = args as tf.Tensor[];
    const save = args[3] as (ts: tf.Tensor[]) => void;
    const [y, mean, invStd] = tf.engine().runKernel(LAYER_NORM, { x: xi, gamma: g, beta: b } as unknown as tf.NamedTensorMap, { epsilon } as never) as tf.Tensor[];
    save([xi, mean, invStd, g]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, m, inv, gs] = saved;
        return tf.engine().runKernel(LAYER_NORM_GRAD, { dy, x: xs, mean: m, invStd: inv, gamma: gs } as unknown as tf.NamedTensorMap, {} as never) as tf.Tensor[];
      },
    };
  });
  return op(x, gamma, beta) as tf.Tensor;
}
