import * as tf from '@tensorflow/tfjs';
import { Examples, sharedFloat32 } from '../data/types';
import { Network } from '../models/network';
import { argmaxRows } from './accuracy';

const EVAL_BATCH = 256;

/**
 * Softmax probabilities of `net` (every block in inference mode) on examples
 * `idx` of shape `shape`; with `fromBlock` > 0 the examples are the cached
 * outputs of the first `fromBlock` blocks.
 */
export function predictProbs(net: Network, e: Examples, idx: readonly number[], shape: readonly number[], fromBlock = 0): Float32Array {
  const size = shape.reduce((a, b) => a * b, 1);
  const K = net.numClasses;
  const out = new Float32Array(idx.length * K);
  const buf = new Float32Array(EVAL_BATCH * size);
  const inference = net.blocks.map(() => false);
  for (let s = 0; s < idx.length; s += EVAL_BATCH) {
    const n = Math.min(EVAL_BATCH, idx.length - s);
    for (let i = 0; i < n; i++) buf.set(e.x.subarray(idx[s + i] * size, (idx[s + i] + 1) * size), i * size);
    const probs = tf.tidy(() => tf.softmax(net.forward(tf.tensor(buf.subarray(0, n * size), [n, ...shape]), inference, fromBlock)));
    out.set(probs.dataSync(), s * K);
    probs.dispose();
  }
  return out;
}

/**
 * The predict -> argmax step every accuracy starts from: softmax probabilities
 * [idx.length x K] (row-major) and the predicted class of each example.
 */
export function classify(net: Network, e: Examples, idx: readonly number[], shape: readonly number[], fromBlock = 0): { probs: Float32Array; pred: Int32Array } {
  const probs = predictProbs(net, e, idx, shape, fromBlock);
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
export function cachePart(net: Network, e: Examples, idx: number[], shape: readonly number[], from: number): CachedPart {
  const f = prefixFeatures(net, e, idx, shape, from);
  return { e: { x: f.x, y: Int32Array.from(idx, (i) => e.y[i]), ids: idx.map((i) => e.ids[i]) }, idx: idx.map((_, k) => k), shape: f.shape, from };
}

/** Run the first `upTo` blocks (inference mode) over examples `idx`: the frozen-prefix cache. */
export function prefixFeatures(net: Network, e: Examples, idx: readonly number[], shape: readonly number[], upTo: number): { x: Float32Array; shape: number[] } {
  const size = shape.reduce((a, b) => a * b, 1);
  const buf = new Float32Array(EVAL_BATCH * size);
  let out: Float32Array | null = null;
  let featShape: number[] = [];
  for (let s = 0; s < idx.length; s += EVAL_BATCH) {
    const n = Math.min(EVAL_BATCH, idx.length - s);
    for (let i = 0; i < n; i++) buf.set(e.x.subarray(idx[i + s] * size, (idx[i + s] + 1) * size), i * size);
    const f = tf.tidy(() => net.prefix(tf.tensor(buf.subarray(0, n * size), [n, ...shape]), upTo));
    featShape = f.shape.slice(1);
    const per = featShape.reduce((a, b) => a * b, 1);
    out ??= sharedFloat32(idx.length * per);
    out.set(f.dataSync(), s * per);
    f.dispose();
  }
  return { x: out ?? new Float32Array(0), shape: featShape };
}

/**
 * Softmax probabilities of every head of `net` (primary first; multi-level
 * networks have one head per trained level) on examples `idx`, in one pass
 * through the blocks. Each entry is [n x K_head] row-major.
 */
export function predictHeadProbs(net: Network, e: Examples, idx: readonly number[], shape: readonly number[], fromBlock = 0): Float32Array[] {
  if (net.extraHeads.length === 0) return [predictProbs(net, e, idx, shape, fromBlock)];
  const size = shape.reduce((a, b) => a * b, 1);
  const ks = [net.numClasses, ...net.extraHeads.map((h) => h.numClasses)];
  const out = ks.map((k) => new Float32Array(idx.length * k));
  const buf = new Float32Array(EVAL_BATCH * size);
  const inference = net.blocks.map(() => false);
  for (let s = 0; s < idx.length; s += EVAL_BATCH) {
    const n = Math.min(EVAL_BATCH, idx.length - s);
    for (let i = 0; i < n; i++) buf.set(e.x.subarray(idx[s + i] * size, (idx[s + i] + 1) * size), i * size);
    const probs = tf.tidy(() => net.forwardAll(tf.tensor(buf.subarray(0, n * size), [n, ...shape]), inference, fromBlock).map((l) => tf.softmax(l)));
    probs.forEach((p, h) => out[h].set(p.dataSync(), s * ks[h]));
    tf.dispose(probs);
  }
  return out;
}
