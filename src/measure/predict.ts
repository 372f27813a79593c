import * as tf from '@tensorflow/tfjs';
import { Examples, sharedFloat32 } from '../data/types';
import { Network } from '../models/network';

/** Batch of an evaluation pass when the caller names none (eval.batch_size decides in runs). */
export const EVAL_BATCH = 256;

/**
 * Softmax probabilities of `net` (every block in inference mode) on examples
 * `idx` of shape `shape`; with `fromBlock` > 0 the examples are the cached
 * outputs of the first `fromBlock` blocks.
 */
export function predictProbs(net: Network, e: Examples, idx: readonly number[], shape: readonly number[], fromBlock = 0, batch = EVAL_BATCH): Float32Array {
  const size = shape.reduce((a, b) => a * b, 1);
  const K = net.numClasses;
  const out = new Float32Array(idx.length * K);
  const buf = new Float32Array(batch * size);
  const inference = net.blocks.map(() => false);
  for (let s = 0; s < idx.length; s += batch) {
    const n = Math.min(batch, idx.length - s);
    e.x.read(idx, s, n, buf);
    const probs = tf.tidy(() => tf.softmax(net.forward(tf.tensor(buf.subarray(0, n * size), [n, ...shape]), inference, fromBlock)));
    out.set(probs.dataSync(), s * K);
    probs.dispose();
  }
  return out;
}


/** Run the first `upTo` blocks (inference mode) over examples `idx`: the frozen-prefix cache. */
export function prefixFeatures(net: Network, e: Examples, idx: readonly number[], shape: readonly number[], upTo: number, batch = EVAL_BATCH): { x: Float32Array; shape: number[] } {
  const size = shape.reduce((a, b) => a * b, 1);
  const buf = new Float32Array(batch * size);
  let out: Float32Array | null = null;
  let featShape: number[] = [];
  for (let s = 0; s < idx.length; s += batch) {
    const n = Math.min(batch, idx.length - s);
    e.x.read(idx, s, n, buf);
    const f = tf.tidy(() => net.prefix(tf.tensor(buf.subarray(0, n * size), [n, ...shape]), upTo));
    featShape = f.shape.slice(1);
    const per = featShape.reduce((a, b) => a * b, 1);
    out ??= sharedFloat32(idx.length * per);
    out.set(f.dataSync(), s * per);
    f.dispose();
  }
  return { x: out ?? new Float32Array(0), shape: featShape };
}
