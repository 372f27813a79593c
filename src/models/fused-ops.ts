/**
 * GELU and the softmax over the last axis as single kernels forward and
 * backward where the backend registers them (GranularGelu, GranularGeluGrad,
 * GranularSoftmaxGrad: the `native` backend, native/onednn.cc), else as the
 * ops tfjs composes them from. Same definitions either way:
 * - GELU (Hendrycks & Gimpel 2016; tfjs-layers' 'gelu', torch's nn.GELU()):
 *   y = x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2; dx = dy * (Phi(x) + x * phi(x)),
 *   phi the standard normal density. Composed: Div, Erf, Add, Mul forward and
 *   about ten kernels back (Erf's gradient: Square, Neg, Exp, Mul...).
 * - softmax's gradient from its output y: dx = y * (dy - sum(dy * y)) per row
 *   (tfjs's Softmax gradient, three kernels and a reduction).
 * A ViT block runs GELU once and the attention softmax once; fused, each keeps
 * only its input (GELU) or output (softmax) for the backward pass.
 */
import * as tf from '@tensorflow/tfjs';
import { GELU, GELU_GRAD, SOFTMAX_GRAD } from '../engine';

const has = (kernelName: string) => tf.getKernel(kernelName, tf.getBackend()) !== undefined;

/** GELU of `x` (any shape): the fused kernels where the backend has them, else tfjs-layers' composed ops. Differentiable. */
export function gelu(x: tf.Tensor): tf.Tensor {
  if (x.dtype !== 'float32' || !has(GELU) || !has(GELU_GRAD)) return composedGelu(x);
  const op = tf.customGrad((...args: unknown[]) => {
    const xi = args[0] as tf.Tensor;
    const save = args[1] as (ts: tf.Tensor[]) => void;
    save([xi]);
    return {
      value: tf.engine().runKernel(GELU, { x: xi } as unknown as tf.NamedTensorMap) as tf.Tensor,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.engine().runKernel(GELU_GRAD, { dy, x: saved[0] } as unknown as tf.NamedTensorMap) as tf.Tensor,
    };
  });
  return op(x) as tf.Tensor;
}

/** tfjs-layers' 'gelu' activation, op for op: x * (0.5 * (1 + erf(x / sqrt 2))). */
export function composedGelu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(x, tf.mul(0.5, tf.add(1, tf.erf(tf.div(x, Math.SQRT2))))));
}

/** Softmax over the last axis of `x`: its gradient one fused kernel where the backend has it, else tfjs's. Differentiable. */
export function softmaxLastAxis(x: tf.Tensor): tf.Tensor {
  if (x.dtype !== 'float32' || !has(SOFTMAX_GRAD)) return tf.softmax(x);
  const op = tf.customGrad((...args: unknown[]) => {
    const xi = args[0] as tf.Tensor;
    const save = args[1] as (ts: tf.Tensor[]) => void;
    const y = tf.softmax(xi);
    save([y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.engine().runKernel(SOFTMAX_GRAD, { dy, y: saved[0] } as unknown as tf.NamedTensorMap) as tf.Tensor,
    };
  });
  return op(x) as tf.Tensor;
}

/**
 * The 'gelu' activation of a tf.layers.dense, run as `gelu` above. It keeps
 * tfjs-layers' class name, so the layer's config (saved models, ONNX export)
 * still says 'gelu'.
 */
export class FusedGelu extends tf.serialization.Serializable {
  static readonly className = 'gelu';
  apply(x: tf.Tensor): tf.Tensor {
    return gelu(x);
  }
  override getConfig(): tf.serialization.ConfigDict {
    return {};
  }
}

/**
 * Makes a dense layer built with activation 'gelu' run it as FusedGelu.
 * Throws if the layer's activation is not 'gelu' (nothing else is replaced).
 */
export function withFusedGelu<L extends tf.layers.Layer>(dense: L): L {
  const d = dense as unknown as { activation?: { getClassName(): string } };
  if (!d.activation || d.activation.getClassName() !== 'gelu') throw new Error(`withFusedGelu: layer ${dense.name} has no 'gelu' activation`);
  d.activation = new FusedGelu();
  return dense;
}
