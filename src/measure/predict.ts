import * as tf from '@tensorflow/tfjs';
import { FloatStore } from '../data/cache/store';
import { Split } from '../data/labels/split';
import { Dataset, Examples, sharedFloat32 } from '../data/types';
import { Network } from '../models/network';
import { argmaxRows } from './accuracy';

/** Batch of an evaluation pass when the caller names none (runs pass eval.batch_size, see evalBatchSize). */
export const EVAL_BATCH = 64;

/** eval.batch_size, or the training batch: no pass holds more examples than a training step does. */
export function evalBatchSize(cfg: { eval: { batch_size: number | null }; train: { batch_size: number } }): number {
  return cfg.eval.batch_size ?? cfg.train.batch_size;
}

/** An evaluation pass stopped by SIGINT/SIGTERM (the run ends as interrupted; its last checkpoint stays valid). */
export class Interrupted extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
    this.name = 'Interrupted';
  }
}

let stopSignal: NodeJS.Signals | null = null;

/**
 * Called by a command's signal handler: every evaluation pass stops at its
 * next batch by throwing Interrupted. (A pass yields to the event loop between
 * batches, which is what lets the handler run at all.)
 */
export function stopEvaluation(signal: NodeJS.Signals | null): void {
  stopSignal = signal;
}

async function betweenBatches(): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
  if (stopSignal) throw new Interrupted(stopSignal);
}

/**
 * An evaluation pass over `total` examples, `batch` at a time, without
 * synchronous readback: `launch(s, n)` starts examples s..s+n on the device
 * and returns the output tensors; `land(values, s)` receives their values.
 * Batch k+1 is launched before batch k's values are awaited, so a GPU
 * computes the next batch while the host reads the last one; at most two
 * batches' outputs are alive. `launch` may reuse its input buffer: a batch's
 * input has gone to the device by the time `launch` returns.
 */
async function pass(total: number, batch: number, launch: (s: number, n: number) => tf.Tensor[], land: (values: ArrayLike<number>[], s: number) => void): Promise<void> {
  let inFlight: { s: number; out: tf.Tensor[] } | null = null;
  try {
    const batches = Math.ceil(total / batch);
    for (let k = 0; k <= batches; k++) {
      const s = k * batch;
      const started = k < batches ? { s, out: launch(s, Math.min(batch, total - s)) } : null;
      const done = inFlight;
      inFlight = started;
      if (done) {
        try {
          land(await Promise.all(done.out.map((t) => t.data() as Promise<ArrayLike<number>>)), done.s);
        } finally {
          tf.dispose(done.out);
        }
        await betweenBatches();
      }
    }
  } finally {
    if (inFlight) tf.dispose(inFlight.out);
  }
}

/**
 * Softmax probabilities of `net` (every block in inference mode) on examples
 * `idx` of shape `shape`; with `fromBlock` > 0 the examples are the cached
 * outputs of the first `fromBlock` blocks.
 */
export async function predictProbs(net: Network, e: Examples, idx: readonly number[], shape: readonly number[], fromBlock = 0, batch = EVAL_BATCH): Promise<Float32Array> {
  const size = shape.reduce((a, b) => a * b, 1);
  const K = net.numClasses;
  const out = new Float32Array(idx.length * K);
  const buf = new Float32Array(batch * size);
  const inference = net.blocks.map(() => false);
  await pass(
    idx.length, batch,
    (s, n) => {
      e.x.read(idx, s, n, buf);
      return [tf.tidy(() => tf.softmax(net.forward(tf.tensor(buf.subarray(0, n * size), [n, ...shape]), inference, fromBlock)))];
    },
    ([probs], s) => out.set(probs, s * K),
  );
  return out;
}

/**
 * The predict -> argmax step every accuracy starts from: softmax probabilities
 * [idx.length x K] (row-major) and the predicted class of each example.
 */
export async function classify(net: Network, e: Examples, idx: readonly number[], shape: readonly number[], fromBlock = 0, batch = EVAL_BATCH): Promise<{ probs: Float32Array; pred: Int32Array }> {
  const probs = await predictProbs(net, e, idx, shape, fromBlock, batch);
  return { probs, pred: argmaxRows(probs, net.numClasses) };
}

/**
 * Examples already passed through the frozen prefix (the first `from` blocks,
 * inference mode): the frozen-prefix cache. `idx` indexes `e` in split order.
 */
export interface CachedPart {
  e: Examples;
  idx: number[];
  shape: number[];
  from: number;
}

/** Cache the frozen prefix's outputs for the examples `idx` of `e` (labels and ids follow). */
export async function cachePart(net: Network, e: Examples, idx: number[], shape: readonly number[], from: number, batch = EVAL_BATCH): Promise<CachedPart> {
  const f = await prefixFeatures(net, e, idx, shape, from, batch);
  return { e: { x: new FloatStore(f.x, f.shape), y: Int32Array.from(idx, (i) => e.y[i]), ids: idx.map((i) => e.ids[i]) }, idx: idx.map((_, k) => k), shape: f.shape, from };
}

/**
 * The frozen-prefix cache of a run: blocks that never train and run
 * deterministically (inference mode, no augmentation) map each example to the
 * same output every epoch, so their outputs for the train, val and test
 * examples of `split` are computed once (`from` blocks, `batch` examples at a
 * time) and training runs the rest of the network on them.
 */
export async function prefixCache(net: Network, data: Dataset, split: Split, from: number, batch: number): Promise<{ train: CachedPart; val: CachedPart; test: CachedPart }> {
  return {
    train: await cachePart(net, data.train, split.train, data.shape, from, batch),
    val: await cachePart(net, data.train, split.val, data.shape, from, batch),
    test: await cachePart(net, data.test, split.test, data.shape, from, batch),
  };
}

/** Run the first `upTo` blocks (inference mode) over examples `idx`: the frozen-prefix cache. */
export async function prefixFeatures(net: Network, e: Examples, idx: readonly number[], shape: readonly number[], upTo: number, batch = EVAL_BATCH): Promise<{ x: Float32Array; shape: number[] }> {
  const size = shape.reduce((a, b) => a * b, 1);
  const buf = new Float32Array(batch * size);
  let out: Float32Array | null = null;
  let featShape: number[] = [];
  await pass(
    idx.length, batch,
    (s, n) => {
      e.x.read(idx, s, n, buf);
      const f = tf.tidy(() => net.prefix(tf.tensor(buf.subarray(0, n * size), [n, ...shape]), upTo));
      featShape = f.shape.slice(1);
      return [f];
    },
    ([f], s) => {
      const per = featShape.reduce((a, b) => a * b, 1);
      out ??= sharedFloat32(idx.length * per);
      out.set(f, s * per);
    },
  );
  return { x: out ?? new Float32Array(0), shape: featShape };
}

/**
 * Softmax probabilities of every head of `net` (primary first; multi-level
 * networks have one head per trained level) on examples `idx`, in one pass
 * through the blocks. Each entry is [n x K_head] row-major.
 */
export async function predictHeadProbs(net: Network, e: Examples, idx: readonly number[], shape: readonly number[], fromBlock = 0, batch = EVAL_BATCH): Promise<Float32Array[]> {
  if (net.extraHeads.length === 0) return [await predictProbs(net, e, idx, shape, fromBlock, batch)];
  const size = shape.reduce((a, b) => a * b, 1);
  const ks = [net.numClasses, ...net.extraHeads.map((h) => h.numClasses)];
  const out = ks.map((k) => new Float32Array(idx.length * k));
  const buf = new Float32Array(batch * size);
  const inference = net.blocks.map(() => false);
  await pass(
    idx.length, batch,
    (s, n) => {
      e.x.read(idx, s, n, buf);
      return tf.tidy(() => net.forwardAll(tf.tensor(buf.subarray(0, n * size), [n, ...shape]), inference, fromBlock).map((l) => tf.softmax(l)));
    },
    (probs, s) => probs.forEach((p, h) => out[h].set(p, s * ks[h])),
  );
  return out;
}
