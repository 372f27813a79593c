/**
 * Batch normalisation in training mode as one differentiable op.
 *
 * tfjs-layers' BatchNormalization builds it from moments, batchNorm and their
 * op-by-op gradients: about 80 kernel calls per layer per step, which made
 * small elementwise kernels the largest cost of a resnet8 step (bench/README.md).
 * Here the forward pass is 9 kernels and the backward pass uses the closed form
 *   dx = gamma / sigma * (dy - mean(dy) - x_hat * mean(dy * x_hat)),
 *   dgamma = sum(dy * x_hat),  dbeta = sum(dy)
 * (sums over every axis but the channel axis). The layer's moving statistics
 * are updated exactly as the layer itself does it. Inference mode and symbolic
 * tensors still go through the layer.
 */
import * as tf from '@tensorflow/tfjs';

interface BatchNormLike extends tf.layers.Layer {
  momentum: number;
  epsilon: number;
}

type LayerVar = { read(): tf.Variable; write(v: tf.Tensor): void; originalName: string };

function weight(layer: tf.layers.Layer, suffix: string): LayerVar {
  const w = (layer.weights as unknown as LayerVar[]).find((v) => v.originalName.endsWith(suffix));
  if (!w) throw new Error(`batch norm layer '${layer.name}' has no '${suffix}' weight`);
  return w;
}

export function isBatchNorm(layer: tf.layers.Layer): boolean {
  return layer.getClassName() === 'BatchNormalization';
}

/** The layer's training-mode output for `x` (channels last), updating its moving mean and variance. */
export function batchNormTrain(layer: tf.layers.Layer, x: tf.Tensor): tf.Tensor {
  const bn = layer as BatchNormLike;
  const C = x.shape[x.shape.length - 1];
  const axes = x.shape.slice(0, -1).map((_, i) => i);
  const n = x.size / C;
  const gamma = weight(layer, 'gamma').read();
  const beta = weight(layer, 'beta').read();
  let stats: { mean: tf.Tensor; variance: tf.Tensor } | null = null;
  const op = tf.customGrad((...args: unknown[]) => {
    const [xi, g, b] = args as tf.Tensor[];
    const save = args[3] as (ts: tf.Tensor[]) => void;
    const mean = tf.mean(xi, axes, true);
    const xc = tf.sub(xi, mean);
    const variance = tf.mean(tf.square(xc), axes, true);
    const inv = tf.rsqrt(tf.add(variance, bn.epsilon));
    const xhat = tf.mul(xc, inv);
    const y = tf.add(tf.mul(xhat, g), b);
    stats = { mean: tf.keep(tf.reshape(mean, [C])), variance: tf.keep(tf.reshape(variance, [C])) };
    save([xhat, inv, g]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xh, iv, gg] = saved;
        const dbeta = tf.sum(dy, axes);
        const dgamma = tf.sum(tf.mul(dy, xh), axes);
        const centred = tf.sub(tf.sub(dy, tf.div(dbeta, n)), tf.mul(xh, tf.div(dgamma, n)));
        return [tf.mul(tf.mul(gg, iv), centred), dgamma, dbeta];
      },
    };
  });
  const y = op(x, gamma, beta) as tf.Tensor;
  const s = stats as unknown as { mean: tf.Tensor; variance: tf.Tensor };
  // As tfjs-layers does: moving -= (moving - batch) * (1 - momentum).
  tf.tidy(() => {
    for (const [suffix, value] of [['moving_mean', s.mean], ['moving_variance', s.variance]] as const) {
      const v = weight(layer, suffix);
      const orig = v.read();
      v.write(tf.sub(orig, tf.mul(tf.sub(orig, value), 1 - bn.momentum)));
    }
  });
  tf.dispose([s.mean, s.variance]);
  return y;
}
