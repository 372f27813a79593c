import * as tf from '@tensorflow/tfjs';
import { PixelStore } from '../data/cache/store';
import { Network, NamedVariable } from '../models/network';
import { lossOf } from '../models/loss';
import { Rng } from '../util/rng';

/**
 * Training-dynamics measures of DESIGN.md ("Fisher trace", "Sharpness"). All
 * of them look at every learnable parameter, trainable or frozen, with every
 * block in inference mode (batch norm uses its moving statistics), on a fixed
 * batch of training examples chosen once per run.
 */
export interface Probe {
  /** [n, H, W, C] inputs. */
  x: tf.Tensor4D;
  /** Labels as trained (noisy ones included), at the run's level. */
  y: Int32Array;
  /** The loss the run trains with: sharpness is measured on it. */
  loss: 'xent' | 'mse';
  /** Examples per forward pass (eval.batch_size): the probe is measured in chunks of this many. */
  batch: number;
  /**
   * When the run's predictive distribution is not the head's softmax
   * (finetune.head: coarsen): log-probabilities at the run's level from the
   * head's logits, and that level's class count. The Fisher samples labels
   * from, and differentiates, this distribution; sharpness uses its
   * cross-entropy.
   */
  logProbs?: (logits: tf.Tensor) => tf.Tensor2D;
  numClasses?: number;
}

/** The probe's loss on the network's output: the run's loss, or the cross-entropy of `logProbs`. */
function lossOnProbe(probe: Probe, logits: tf.Tensor, y: Int32Array, numClasses: number): tf.Scalar {
  if (!probe.logProbs) return lossOf(probe.loss, logits, y, numClasses);
  return tf.tidy(() => probe.logProbs!(logits).mul(tf.oneHot(tf.tensor1d(y, 'int32'), probe.numClasses!)).sum(1).mean().neg() as tf.Scalar);
}

/** The probe's examples in chunks of `probe.batch`: [from, count] (one chunk when it fits). */
function chunks(probe: Probe): Array<[number, number]> {
  const n = probe.x.shape[0];
  const out: Array<[number, number]> = [];
  for (let from = 0; from < n; from += probe.batch) out.push([from, Math.min(probe.batch, n - from)]);
  return out;
}

function slice(probe: Probe, from: number, count: number): tf.Tensor4D {
  return count === probe.x.shape[0] ? probe.x : probe.x.slice([from, 0, 0, 0], [count, -1, -1, -1]);
}

/** Mean loss of the probe, one chunk at a time (a single chunk: exactly the full-batch loss). */
function chunkedLoss(net: Network, probe: Probe, inference: boolean[]): tf.Scalar {
  const parts = chunks(probe);
  const n = probe.x.shape[0];
  if (parts.length === 1) return lossOnProbe(probe, net.forward(probe.x, inference), probe.y, net.numClasses);
  return tf.addN(parts.map(([from, count]) => lossOnProbe(probe, net.forward(slice(probe, from, count), inference), probe.y.subarray(from, from + count), net.numClasses).mul(count / n))) as tf.Scalar;
}

/**
 * The values of float32 tensors (scalars or vectors), flattened and
 * concatenated in order, in one readback (no synchronous read: a GPU backend
 * has none); disposes them.
 */
async function readScalars(scalars: tf.Tensor[]): Promise<Float32Array> {
  if (!scalars.length) return new Float32Array(0);
  const packed = tf.tidy(() => tf.concat(scalars.map((t) => t.reshape([-1]))));
  try {
    return (await packed.data()) as Float32Array;
  } finally {
    packed.dispose();
    tf.dispose(scalars);
  }
}

function learnable(net: Network): NamedVariable[] {
  return net.variables().filter((v) => v.trainable);
}

function blockName(net: Network, v: NamedVariable): string {
  return v.block < 0 ? 'head' : net.blocks[v.block].name;
}

/**
 * Trace of the Fisher information: the mean over examples of the squared norm
 * of the per-example gradient of log p(y | x). `sampled` draws y from the
 * model's own predictive distribution (the Fisher); otherwise the true labels
 * (the empirical Fisher). One backward pass per example: the per-example norm
 * is not the norm of a batch-mean gradient. Two readbacks: the predictive
 * distributions (to sample labels on the host), then every example's
 * per-variable squared norms together.
 */
export async function fisherTrace(net: Network, probe: Probe, sampled: boolean, seed: number): Promise<{ total: number; perBlock: Record<string, number> }> {
  const vars = learnable(net);
  const list = vars.map((v) => v.variable);
  const blockOf = new Map(vars.map((v) => [v.variable.name, blockName(net, v)]));
  const inference = net.blocks.map(() => false);
  const rng = new Rng(seed, 31);
  const n = probe.x.shape[0];
  const K = probe.numClasses ?? net.numClasses;
  const logProbs = probe.logProbs ?? ((z: tf.Tensor) => tf.logSoftmax(z) as tf.Tensor2D);
  const perBlock: Record<string, number> = {};
  let total = 0;
  // Predictive distributions for the whole subset in one batch (inference mode: examples are independent).
  let probs: Float32Array | null = null;
  if (sampled) {
    probs = new Float32Array(n * K);
    const parts = chunks(probe).map(([from, count]) => ({ from, p: tf.tidy(() => tf.exp(logProbs(net.forward(slice(probe, from, count), inference)))) }));
    try {
      const values = await Promise.all(parts.map(({ p }) => p.data()));
      parts.forEach(({ from }, c) => probs!.set(values[c] as Float32Array, from * K));
    } finally {
      tf.dispose(parts.map(({ p }) => p));
    }
  }
  // Per example: the variables' names and their squared gradient norms, left on the device until all are done.
  const perExample: Array<{ names: string[]; sq: tf.Tensor }> = [];
  for (let i = 0; i < n; i++) {
    const names: string[] = [];
    const sq = tf.tidy(() => {
      const xi = probe.x.slice([i, 0, 0, 0], [1, -1, -1, -1]);
      let label = probe.y[i];
      if (probs) {
        let u = rng.next();
        label = K - 1;
        for (let k = 0; k < K; k++) {
          u -= probs[i * K + k];
          if (u < 0) {
            label = k;
            break;
          }
        }
      }
      const { grads } = tf.variableGrads(() => {
        const logp = logProbs(net.forward(xi, inference));
        return logp.slice([0, label], [1, 1]).sum().neg() as tf.Scalar;
      }, list);
      const entries = Object.entries(grads);
      names.push(...entries.map(([name]) => name));
      return tf.stack(entries.map(([, g]) => g.square().sum()));
    });
    perExample.push({ names, sq });
  }
  const values = await readScalars(perExample.map((e) => e.sq));
  // Summed on the host in the order the examples and variables were taken (float64, as when each was read alone).
  let k = 0;
  for (const { names } of perExample) {
    for (const name of names) {
      const v = values[k++];
      const b = blockOf.get(name)!;
      perBlock[b] = (perBlock[b] ?? 0) + v / n;
      total += v / n;
    }
  }
  return { total, perBlock };
}

/** Mean cross-entropy of the network (inference mode) on the probe batch. */
export async function probeLoss(net: Network, probe: Probe): Promise<number> {
  return (await readScalars([probeLossTensor(net, probe)]))[0];
}

/** probeLoss, left on the device. */
function probeLossTensor(net: Network, probe: Probe): tf.Scalar {
  const inference = net.blocks.map(() => false);
  return tf.tidy(() => chunkedLoss(net, probe, inference));
}

/** Run `fn` with perturbed weights and put the exact original values back afterwards. */
async function withSavedWeights<T>(vars: NamedVariable[], fn: () => Promise<T>): Promise<T> {
  const saved = vars.map((v) => tf.clone(v.variable));
  try {
    return await fn();
  } finally {
    vars.forEach((v, i) => v.variable.assign(saved[i]));
    tf.dispose(saved);
  }
}

/**
 * Adaptive sharpness (Andriushchenko et al. 2023). `avg`: E[L(w + d)] - L(w),
 * d ~ N(0, rho^2 diag(w^2)), over `draws` draws. `worst`: max L(w + d) - L(w)
 * over |d_i| <= rho |w_i|, by `steps` of projected sign-gradient ascent in the
 * rescaled variable u = d / |w| (so the constraint is a box |u| <= rho).
 * The losses of each part are read back together, once it is done.
 */
export async function sharpness(net: Network, probe: Probe, rho: number, draws: number, steps: number, seed: number): Promise<{ avg: number; worst: number }> {
  const vars = learnable(net);
  const base = await probeLoss(net, probe);
  if (rho === 0) return { avg: 0, worst: 0 };
  const rng = new Rng(seed, 37);
  const avg = await withSavedWeights(vars, async () => {
    const orig = vars.map((v) => tf.clone(v.variable));
    const losses: tf.Scalar[] = [];
    for (let d = 0; d < draws; d++) {
      vars.forEach((v, i) => {
        const size = v.variable.size;
        const z = Float32Array.from({ length: size }, () => rng.normal());
        tf.tidy(() => v.variable.assign(orig[i].add(tf.tensor(z, orig[i].shape).mul(orig[i].abs()).mul(rho))));
      });
      losses.push(probeLossTensor(net, probe));
    }
    tf.dispose(orig);
    let sum = 0;
    for (const l of await readScalars(losses)) sum += l;
    return sum / draws - base;
  });
  const worst = await withSavedWeights(vars, async () => {
    const orig = vars.map((v) => tf.clone(v.variable));
    const u: tf.Tensor[] = vars.map((v) => tf.zerosLike(v.variable));
    const list = vars.map((v) => v.variable);
    const eta = (2 * rho) / Math.max(1, steps);
    const inference = net.blocks.map(() => false);
    // The loss before each ascent step, then after the last.
    const losses: tf.Scalar[] = [];
    for (let s = 0; s < steps; s++) {
      const { value, grads } = tf.variableGrads(() => chunkedLoss(net, probe, inference), list);
      losses.push(value);
      vars.forEach((v, i) => {
        const g = grads[v.variable.name];
        const next = tf.tidy(() => u[i].add(g.sign().mul(eta)).clipByValue(-rho, rho));
        u[i].dispose();
        u[i] = next;
        tf.tidy(() => v.variable.assign(orig[i].add(u[i].mul(orig[i].abs()))));
      });
      tf.dispose(Object.values(grads));
    }
    losses.push(probeLossTensor(net, probe));
    tf.dispose([...orig, ...u]);
    let best = 0;
    for (const l of await readScalars(losses)) best = Math.max(best, l - base);
    return best;
  });
  return { avg, worst };
}

/** L2 distance of each block's learnable weights from reference values (the pretrained ones). */
export async function weightDistance(net: Network, reference: ReadonlyMap<string, tf.Tensor>): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const blocks: string[] = [];
  const squares: tf.Scalar[] = [];
  for (const v of learnable(net)) {
    const ref = reference.get(v.name);
    if (!ref) continue;
    blocks.push(blockName(net, v));
    squares.push(tf.tidy(() => v.variable.sub(ref).square().sum()));
  }
  const d = await readScalars(squares);
  blocks.forEach((b, i) => (out[b] = (out[b] ?? 0) + d[i]));
  for (const k of Object.keys(out)) out[k] = Math.sqrt(out[k]);
  return out;
}

/** A fixed, seeded subset of training examples (evaluation view, normalised), as one tensor. */
export function makeProbe(x: PixelStore, shape: [number, number, number], idx: readonly number[], labels: Int32Array, n: number, seed: number, loss: 'xent' | 'mse', batch: number): Probe {
  const rng = new Rng(seed, 41);
  const pick = rng.sample(idx.length, Math.min(n, idx.length));
  const size = shape[0] * shape[1] * shape[2];
  const buf = new Float32Array(pick.length * size);
  x.read(Int32Array.from(pick, (p) => idx[p]), 0, pick.length, buf);
  return { x: tf.tensor4d(buf, [pick.length, ...shape]), y: Int32Array.from(pick, (p) => labels[p]), loss, batch };
}
