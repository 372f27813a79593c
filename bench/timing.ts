/**
 * The timed training loop of the ImageNet-size benches: bench/resnet.ts (CPU
 * backends, against PyTorch on CPU) and bench/gpu/bench.ts (webgpu, against
 * PyTorch CUDA) time the same step the same way, so their numbers compare.
 *
 * The step is the training loop's (src/train/loop.ts): variableGrads over
 * net.forward with every block in training mode, softmax cross-entropy,
 * NamedOptimizer (SGD, momentum 0.9, no weight decay), on two fixed batches of
 * standard-normal inputs and uniform labels drawn from Rng(1), alternating.
 * Losses stay on the device and are read back together every `readEvery`
 * steps and at the end of every timed block (the wait for the device is part
 * of the block's time, as PyTorch's `loss.item()` is in bench/torch_bench.py).
 * The fastest of `repeat` blocks of `steps` steps counts: a shared machine
 * only ever slows a block down.
 */
import * as tf from '@tensorflow/tfjs';
import { Network } from '../src/models/network';
import { NamedOptimizer } from '../src/train/optimizer';
import { Rng } from '../src/util/rng';

export interface TimingOptions {
  /** Images per step. */
  batch: number;
  /** One input image: [height, width, channels]. */
  shape: [number, number, number];
  /** Output classes of `net` (labels are drawn in [0, classes)). */
  classes: number;
  /** SGD learning rate. */
  lr: number;
  /** Untimed steps first (kernel compilation, buffer pools). */
  warmup: number;
  /** Timed blocks; the fastest counts. */
  repeat: number;
  /** Steps per timed block. */
  steps: number;
  /** Read the pending losses back every this many steps (1: every step). */
  readEvery: number;
}

export interface Timing {
  imagesPerSecond: number;
  msPerStep: number;
  /** Trainable parameters (every block training). */
  params: number;
  /** The loss of the last step. */
  lastLoss: number;
}

/**
 * Trains `net` for `warmup + repeat * steps` steps and returns the fastest
 * block's speed. Throws naming the step where a loss is not finite (a
 * diverged or miscomputed step must not pass as a speed).
 */
export async function timeTraining(net: Network, o: TimingOptions): Promise<Timing> {
  const vars = net.variables().filter((v) => v.trainable);
  const byTfName = new Map(vars.map((v) => [v.variable.name, v.name]));
  const varByName = new Map(vars.map((v) => [v.name, v.variable]));
  const training = net.blocks.map(() => true);
  const optimizer = new NamedOptimizer({ kind: 'sgd', momentum: 0.9, weightDecay: 0 });
  const size = o.shape[0] * o.shape[1] * o.shape[2];
  const rng = new Rng(1);
  const batches = [0, 1].map(() => ({
    x: Float32Array.from({ length: o.batch * size }, () => rng.normal()),
    y: Int32Array.from({ length: o.batch }, () => rng.int(o.classes)),
  }));
  let done = 0;
  let lastLoss = NaN;
  const pending: tf.Scalar[] = [];
  const read = async () => {
    const all = pending.splice(0);
    if (!all.length) return;
    const stacked = tf.stack(all);
    try {
      const v = await stacked.data();
      const bad = v.findIndex((l) => !Number.isFinite(l));
      if (bad >= 0) throw new Error(`step ${done - all.length + bad + 1}: loss is ${v[bad]}`);
      lastLoss = v[v.length - 1];
    } finally {
      tf.dispose([stacked, ...all]);
    }
  };
  const step = async () => {
    const b = batches[done % 2];
    const { value, grads } = tf.tidy(() => {
      const x = tf.tensor4d(b.x, [o.batch, ...o.shape]);
      const y = tf.oneHot(tf.tensor1d(b.y, 'int32'), o.classes);
      return tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, net.forward(x, training)) as tf.Scalar, vars.map((v) => v.variable));
    });
    optimizer.apply(varByName, new Map(Object.entries(grads).map(([k, g]) => [byTfName.get(k)!, g])), o.lr);
    tf.dispose(Object.values(grads));
    pending.push(value);
    done++;
    if (pending.length >= o.readEvery) await read();
  };
  try {
    for (let i = 0; i < o.warmup; i++) await step();
    await read();
    let seconds = Infinity;
    for (let r = 0; r < o.repeat; r++) {
      const t0 = performance.now();
      for (let i = 0; i < o.steps; i++) await step();
      await read();
      seconds = Math.min(seconds, (performance.now() - t0) / 1000);
    }
    return { imagesPerSecond: (o.steps * o.batch) / seconds, msPerStep: (1000 * seconds) / o.steps, params: net.paramCount(training), lastLoss };
  } finally {
    // (The optimizer's state is left allocated: bench/gpu/bench.ts reads the allocator's peak after this returns.)
    tf.dispose(pending);
  }
}
