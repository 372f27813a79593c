/**
 * Batch normalisation in training mode as one differentiable op
 * (Ioffe & Szegedy 2015), optionally followed by a residual add and a ReLU.
 *
 * tfjs-layers' BatchNormalization builds it from moments, batchNorm and their
 * op-by-op gradients: about 80 kernel calls per layer per step, which made
 * small elementwise kernels the largest cost of a resnet8 step (bench/README.md).
 * Here the backward pass is the closed form
 *   dx = gamma / sigma * (dy - mean(dy) - x_hat * mean(dy * x_hat)),
 *   dgamma = sum(dy * x_hat),  dbeta = sum(dy)
 * (sums over every axis but the channel axis). The layer's moving statistics
 * are updated exactly as the layer itself does it (biased batch variance).
 * Inference mode and symbolic tensors still go through the layer.
 *
 * Two implementations of the same definition:
 * - On a backend with the native kernel (GranularBatchNormTrain, the
 *   `native` backend): one kernel forward, one backward, which save only
 *   x, the per-channel mean and 1/sigma (and the output when a ReLU follows,
 *   for its mask), as PyTorch does. With `relu`/`residual` the ReLU and the
 *   residual add are part of the same op: a ResNet unit keeps one activation
 *   where the separate layers kept three (bn out, sum, relu out).
 * - Elsewhere: 9 tfjs kernels forward, saving x_hat, then the residual add and
 *   the ReLU as separate ops (the numbers these backends always gave).
 */
import * as tf from '@tensorflow/tfjs';
import { BATCH_NORM_TRAIN, BATCH_NORM_TRAIN_GRAD, engineCapabilities } from '../engine';

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

/** A plain ReLU layer (no max value, no negative slope): what batchNormTrain can fuse. */
export function isPlainRelu(layer: tf.layers.Layer): boolean {
  const c = layer.getConfig() as { maxValue?: number | null; negativeSlope?: number; threshold?: number };
  return layer.getClassName() === 'ReLU' && c.maxValue == null && !c.negativeSlope && !c.threshold;
}

/** Whether the active backend runs the fused op as one native kernel. */
export function nativeBatchNorm(): boolean {
  return engineCapabilities().fusedBatchNormTrain;
}

export interface BatchNormTrainOptions {
  /** Added after the normalisation (a ResNet unit's shortcut), same shape as x. */
  residual?: tf.Tensor;
  /** A ReLU after the normalisation (and the residual). */
  relu?: boolean;
}

/**
 * The layer's training-mode output for `x` (channels last), then
 * `+ residual` and ReLU if asked, updating the layer's moving mean and
 * variance. Shapes: x [..., C]; residual like x; returns x's shape.
 */
export function batchNormTrain(layer: tf.layers.Layer, x: tf.Tensor, opts: BatchNormTrainOptions = {}): tf.Tensor {
  const bn = layer as BatchNormLike;
  const C = x.shape[x.shape.length - 1];
  const gamma = weight(layer, 'gamma').read();
  const beta = weight(layer, 'beta').read();
  let stats: { mean: tf.Tensor; variance: tf.Tensor };
  let y: tf.Tensor;
  if (nativeBatchNorm() && x.dtype === 'float32') {
    ({ y, stats } = nativeOp(x, gamma, beta, bn.epsilon, opts));
  } else {
    ({ y, stats } = composedOp(x, gamma, beta, bn.epsilon));
    if (opts.residual) y = tf.add(y, opts.residual);
    if (opts.relu) y = tf.relu(y);
  }
  // As tfjs-layers does: moving -= (moving - batch) * (1 - momentum).
  tf.tidy(() => {
    for (const [suffix, value] of [['moving_mean', stats.mean], ['moving_variance', stats.variance]] as const) {
      const v = weight(layer, suffix);
      const orig = v.read();
      v.write(tf.sub(orig, tf.mul(tf.sub(orig, tf.reshape(value, [C])), 1 - bn.momentum)));
    }
  });
  tf.dispose([stats.mean, stats.variance]);
  return y;
}

type Stats = { mean: tf.Tensor; variance: tf.Tensor };

/** The native kernels' op (see the file comment): forward and backward one kernel each. */
function nativeOp(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: number, opts: BatchNormTrainOptions): { y: tf.Tensor; stats: Stats } {
  const relu = opts.relu === true;
  let stats: Stats | null = null;
  const op = tf.customGrad((...args: unknown[]) => {
    const [xi, g, b, r] = args as tf.Tensor[];
    const save = args[args.length - 1] as (ts: tf.Tensor[]) => void;
    const inputs = { x: xi, gamma: g, beta: b, ...(opts.residual ? { residual: r } : {}) };
    const [out, mean, variance, invStd] = tf.engine().runKernel(BATCH_NORM_TRAIN, inputs as unknown as tf.NamedTensorMap, { epsilon, relu } as never) as tf.Tensor[];
    stats = { mean: tf.keep(mean), variance: tf.keep(variance) };
    save(relu ? [xi, mean, invStd, g, out] : [xi, mean, invStd, g]);
    return {
      value: out,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, m, inv, gs, ys] = saved;
        const grads = tf.engine().runKernel(
          BATCH_NORM_TRAIN_GRAD,
          { dy, x: xs, mean: m, invStd: inv, gamma: gs, ...(ys ? { y: ys } : {}) } as unknown as tf.NamedTensorMap,
          { residual: Boolean(opts.residual) } as never,
        ) as tf.Tensor[];
        return grads;
      },
    };
  });
  const y = (opts.residual ? op(x, gamma, beta, opts.residual) : op(x, gamma, beta)) as tf.Tensor;
  return { y, stats: stats! };
}

/** The op from tfjs kernels (see the file comment). */
function composedOp(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: number): { y: tf.Tensor; stats: Stats } {
  const C = x.shape[x.shape.length - 1];
  const axes = x.shape.slice(0, -1).map((_, i) => i);
  const n = x.size / C;
  let stats: Stats | null = null;
  const op = tf.customGrad((...args: unknown[]) => {
    const [xi, g, b] = args as tf.Tensor[];
    const save = args[3] as (ts: tf.Tensor[]) => void;
    const mean = tf.mean(xi, axes, true);
    const xc = tf.sub(xi, mean);
    const variance = tf.mean(tf.square(xc), axes, true);
    const inv = tf.rsqrt(tf.add(variance, epsilon));
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
  return { y, stats: stats! };
}
