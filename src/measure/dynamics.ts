import * as tf from '@tensorflow/tfjs';
import { PixelStore } from '../data/store';
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
 * is not the norm of a batch-mean gradient.
 */
export function fisherTrace(net: Network, probe: Probe, sampled: boolean, seed: number): { total: number; perBlock: Record<string, number> } {
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
    for (const [from, count] of chunks(probe)) probs.set(tf.tidy(() => tf.exp(logProbs(net.forward(slice(probe, from, count), inference))).dataSync() as Float32Array), from * K);
  }
  for (let i = 0; i < n; i++) {
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
      return Object.entries(grads).map(([name, g]) => [name, g.square().sum()] as const);
    });
    for (const [name, t] of sq) {
      const v = t.dataSync()[0];
      t.dispose();
      const b = blockOf.get(name)!;
      perBlock[b] = (perBlock[b] ?? 0) + v / n;
      total += v / n;
    }
  }
  return { total, perBlock };
}

/** Mean cross-entropy of the network (inference mode) on the probe batch. */
export function probeLoss(net: Network, probe: Probe): number {
  const inference = net.blocks.map(() => false);
  return tf.tidy(() => chunkedLoss(net, probe, inference).dataSync()[0]);
}

/** Run `fn` with perturbed weights and put the exact original values back afterwards. */
function withSavedWeights<T>(vars: NamedVariable[], fn: () => T): T {
  const saved = vars.map((v) => tf.clone(v.variable));
  try {
    return fn();
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
 */
export function sharpness(net: Network, probe: Probe, rho: number, draws: number, steps: number, seed: number): { avg: number; worst: number } {
  const vars = learnable(net);
  const base = probeLoss(net, probe);
  if (rho === 0) return { avg: 0, worst: 0 };
  const rng = new Rng(seed, 37);
  const avg = withSavedWeights(vars, () => {
    const orig = vars.map((v) => tf.clone(v.variable));
    let sum = 0;
    for (let d = 0; d < draws; d++) {
      vars.forEach((v, i) => {
        const size = v.variable.size;
        const z = Float32Array.from({ length: size }, () => rng.normal());
        tf.tidy(() => v.variable.assign(orig[i].add(tf.tensor(z, orig[i].shape).mul(orig[i].abs()).mul(rho))));
      });
      sum += probeLoss(net, probe);
    }
    tf.dispose(orig);
    return sum / draws - base;
  });
  const worst = withSavedWeights(vars, () => {
    const orig = vars.map((v) => tf.clone(v.variable));
    const u: tf.Tensor[] = vars.map((v) => tf.zerosLike(v.variable));
    const list = vars.map((v) => v.variable);
    const eta = (2 * rho) / Math.max(1, steps);
    let best = 0;
    const inference = net.blocks.map(() => false);
    for (let s = 0; s < steps; s++) {
      const { value, grads } = tf.variableGrads(() => chunkedLoss(net, probe, inference), list);
      best = Math.max(best, value.dataSync()[0] - base);
      value.dispose();
      vars.forEach((v, i) => {
        const g = grads[v.variable.name];
        const next = tf.tidy(() => u[i].add(g.sign().mul(eta)).clipByValue(-rho, rho));
        u[i].dispose();
        u[i] = next;
        tf.tidy(() => v.variable.assign(orig[i].add(u[i].mul(orig[i].abs()))));
      });
      tf.dispose(Object.values(grads));
    }
    best = Math.max(best, probeLoss(net, probe) - base);
    tf.dispose([...orig, ...u]);
    return best;
  });
  return { avg, worst };
}

/** L2 distance of each block's learnable weights from reference values (the pretrained ones). */
export function weightDistance(net: Network, reference: ReadonlyMap<string, tf.Tensor>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of learnable(net)) {
    const ref = reference.get(v.name);
    if (!ref) continue;
    const b = blockName(net, v);
    const d = tf.tidy(() => v.variable.sub(ref).square().sum().dataSync()[0]);
    out[b] = (out[b] ?? 0) + d;
  }
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
