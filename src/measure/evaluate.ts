/**
 * Every metric of a run's rows (DESIGN.md "Metric keys"), computed from a
 * network and the run's data: test accuracy at the trained level and every
 * coarser one, validation accuracy, feature alignment, and the dynamics row.
 * The training loop decides when; this file decides what.
 */
import * as tf from '@tensorflow/tfjs';
import { Config } from '../config/schema';
import { levelLabels, Split } from '../data/labels/split';
import { Dataset, Examples } from '../data/types';
import { Level } from '../hierarchy/tree';
import { Network } from '../models/network';
import { accuracy, argmaxRows, coarsenProbs, topkAccuracy } from './accuracy';
import { alignment, randomDirections } from './alignment';
import { fisherTrace, Probe, sharpness, weightDistance } from './dynamics';
import { CachedPart, predictHeadProbs, predictProbs } from './predict';
import { hierarchicalDistanceAtK, LcaHeights, mistakeSeverity } from './severity';
import { Rng } from '../util/rng';

/** How a network's heads are read (train/heads.ts HeadPlan): a kept finer head coarsened to the run's level, and the extra heads of multi-level training. */
export interface HeadReading {
  /** The run-level class of each primary-head class (finetune.head: coarsen), or null. */
  headMap: Int32Array | null;
  /** Classes of the run's level. */
  runClasses: number;
  /** The levels of the extra heads, in head order (multi-level training). */
  extra: ReadonlyArray<{ level: Level }>;
}

/** What the test metrics are measured on: a network, its data and split, the trained level and the coarser ones. */
export interface EvalTarget {
  net: Network;
  data: Dataset;
  split: Split;
  level: Level;
  coarser: Array<{ level: Level; map: Int32Array }>;
  /** Examples per forward pass (eval.batch_size; see evalBatchSize). */
  batch: number;
  /** How the heads are read; absent = one head at the run's level. */
  heads?: HeadReading;
}

/**
 * The run's probabilities at its level: the primary head's softmax [n x K_head],
 * summed over the fine classes under each class of the level when the head is
 * a kept finer one (finetune.head: coarsen). Returns the matrix and its class count.
 */
export function atRunLevel(probs: Float32Array, numHeadClasses: number, heads: HeadReading | undefined): { probs: Float32Array; k: number } {
  if (!heads?.headMap) return { probs, k: numHeadClasses };
  return { probs: coarsenProbs(probs, numHeadClasses, heads.headMap, heads.runClasses), k: heads.runClasses };
}

/** Predicted class at the run's level for examples `idx` of `e` (or the cached prefix outputs), `t.batch` examples per pass. */
async function runLevelPredictions(t: Pick<EvalTarget, 'net' | 'heads' | 'batch'>, e: Examples, idx: readonly number[], shape: readonly number[], cached?: CachedPart): Promise<Int32Array> {
  const raw = await (cached ? predictProbs(t.net, cached.e, cached.idx, cached.shape, cached.from, t.batch) : predictProbs(t.net, e, idx, shape, 0, t.batch));
  const { probs, k } = atRunLevel(raw, t.net.numClasses, t.heads);
  return argmaxRows(probs, k);
}

/**
 * Test metrics (DESIGN.md "Metric keys"): `test_acc` at the stage's level,
 * `test_acc@<level>` at every coarser level by summing the fine classes'
 * probabilities (DESIGN.md "Scoring at a coarser level"), `test_top5` where
 * there are more than 5 classes, `test_acc_easy`/`test_acc_hard` on
 * synthetic data, and mistake severity (DESIGN.md "Mistake severity";
 * Bertinetto et al. 2020): `test_mistake_severity` (NaN without a mistake)
 * and, with more than 5 classes, `test_hdist@5`. `test_acc@<level>` is
 * always the summed reading of the primary head (DESIGN.md); a level with a
 * head of its own (multi-level training) also reports that head as
 * `test_acc_head@<level>` (and, under its older name, the summed reading as
 * `test_acc_summed@<level>`).
 * `cached`: the test set already through the frozen prefix. Accuracies are
 * fractions in [0, 1] (NaN for an empty part); severities are in levels.
 */
export async function evaluate(t: EvalTarget, cached?: CachedPart): Promise<Record<string, number>> {
  const { net, data, split, level, coarser } = t;
  const e = data.test;
  const idx = split.test;
  const all = await (cached ? predictHeadProbs(net, cached.e, cached.idx, cached.shape, cached.from, t.batch) : predictHeadProbs(net, e, idx, data.shape, 0, t.batch));
  const { probs, k: K } = atRunLevel(all[0], net.numClasses, t.heads);
  const pred = argmaxRows(probs, K);
  const labels = levelLabels(e, idx, level);
  const out: Record<string, number> = { test_acc: accuracy(pred, labels) };
  if (K > 5) out.test_top5 = topkAccuracy(probs, K, labels, 5);
  const lca = new LcaHeights(data.hierarchy, level);
  out.test_mistake_severity = mistakeSeverity(pred, labels, lca);
  if (K > 5) out['test_hdist@5'] = hierarchicalDistanceAtK(probs, K, labels, lca, 5);
  if (e.hard) {
    out.test_acc_easy = accuracy(pred, labels, (i) => e.hard![idx[i]] === 0);
    out.test_acc_hard = accuracy(pred, labels, (i) => e.hard![idx[i]] === 1);
  }
  const ownHead = new Map((t.heads?.extra ?? []).map((x, h) => [x.level.name, h + 1]));
  for (const c of coarser) {
    const kc = c.level.classes.length;
    const cp = coarsenProbs(probs, K, c.map, kc);
    const cl = levelLabels(e, idx, c.level);
    const cpred = argmaxRows(cp, kc);
    out[`test_acc@${c.level.name}`] = accuracy(cpred, cl);
    if (ownHead.has(c.level.name)) out[`test_acc_summed@${c.level.name}`] = out[`test_acc@${c.level.name}`];
    if (kc > 5) out[`test_top5@${c.level.name}`] = topkAccuracy(cp, kc, cl, 5);
    if (e.hard) out[`test_acc_hard@${c.level.name}`] = accuracy(cpred, cl, (i) => e.hard![idx[i]] === 1);
  }
  // Each extra head read on its own, against its own level's labels (semantic softmax: test images whose class is shallower than the head's depth have none there and are left out).
  (t.heads?.extra ?? []).forEach((x, i) => {
    const hl = levelLabels(e, idx, x.level);
    out[`test_acc_head@${x.level.name}`] = accuracy(argmaxRows(all[i + 1], x.level.classes.length), hl, (k) => hl[k] >= 0);
  });
  return out;
}

/**
 * `val_acc`: accuracy on the validation hold-out at the trained level (model
 * selection and stop rules look only here); NaN without a hold-out.
 * `valLabels` are the level's labels of split.val, in split order.
 */
export async function validate(t: Pick<EvalTarget, 'net' | 'data' | 'split' | 'heads' | 'batch'>, valLabels: Int32Array, cached?: CachedPart): Promise<number> {
  if (!t.split.val.length) return NaN;
  return accuracy(await runLevelPredictions(t, t.data.train, t.split.val, t.data.shape, cached), valLabels);
}

/**
 * `train_acc_final`: the network (inference mode, no augmentation) on its own
 * training images, against the labels it trained on (`trainLabels`, label
 * noise included), at its level: did the run learn its level? Measured on a
 * fixed sample of `samples` training images drawn with `seed` (all of them
 * when there are fewer), so a run on millions of images does not end with a
 * pass over all of them. A fraction in [0, 1].
 */
export async function trainAccuracy(
  t: Pick<EvalTarget, 'net' | 'data' | 'split' | 'heads' | 'batch'>, trainLabels: Int32Array, samples: number, seed: number, cached?: CachedPart,
): Promise<number> {
  const n = t.split.train.length;
  const pick = samples >= n ? null : new Rng(seed, 43).sample(n, samples).sort((a, b) => a - b);
  if (!pick) return accuracy(await runLevelPredictions(t, t.data.train, t.split.train, t.data.shape, cached), trainLabels);
  const sub = cached ? { ...cached, idx: pick.map((p) => cached.idx[p]) } : undefined;
  const pred = await runLevelPredictions(t, t.data.train, pick.map((p) => t.split.train[p]), t.data.shape, sub);
  return accuracy(pred, Int32Array.from(pick, (p) => trainLabels[p]));
}

/**
 * Alignment of the two-layer network's filters with the true synthetic
 * features at each depth (`align@<level>`, `align_common`, `align_fine`), and
 * the same statistic for random directions (`align_random`); DESIGN.md
 * "Feature alignment". Empty for other architectures and non-synthetic data.
 */
export async function alignmentMetrics(net: Network, data: Dataset, seed: number): Promise<Record<string, number>> {
  if (net.arch !== 'two-layer-conv' || !data.features) return {};
  const kernel = net.blocks[0].layers[0].getWeights()[0];
  const [p1, p2, c, m] = kernel.shape;
  const dim = p1 * p2 * c;
  if (dim !== data.features.dim) return {};
  const w = (await kernel.data()) as Float32Array; // [p, p, C, m] row-major = [dim x m]
  const out: Record<string, number> = {};
  const depths = data.features.byDepth;
  depths.forEach((f, d) => {
    const name = data.hierarchy.levelNames.get(d + 1) ?? `depth${d + 1}`;
    out[`align@${name}`] = alignment(w, dim, m, f);
  });
  out.align_common = out[`align@${data.hierarchy.levelNames.get(1) ?? 'depth1'}`];
  out.align_fine = out[`align@${data.hierarchy.levelNames.get(depths.length) ?? `depth${depths.length}`}`];
  const nRandom = Math.max(...depths.map((f) => f.length / dim));
  out.align_random = alignment(w, dim, m, randomDirections(nRandom, dim, seed));
  return out;
}

/**
 * The measures of a dynamics row (DESIGN.md "Fisher trace", "Sharpness"):
 * `fisher_trace`, `fisher_trace_emp` (and per block), `sharpness_avg`,
 * `sharpness_worst`, plus `weight_dist@<block>` (L2) from `reference` when
 * given. The Fisher is taken on `fisherProbe`, sharpness on `sharpProbe`.
 */
export async function dynamicsMetrics(net: Network, ev: Config['eval'], seed: number, fisherProbe: Probe, sharpProbe: Probe, reference: ReadonlyMap<string, tf.Tensor> | null): Promise<Record<string, number>> {
  const mc = await fisherTrace(net, fisherProbe, true, seed);
  const emp = await fisherTrace(net, fisherProbe, false, seed);
  const sh = await sharpness(net, sharpProbe, ev.sharpness_rho, ev.sharpness_draws, ev.sharpness_steps, seed);
  const row: Record<string, number> = { fisher_trace: mc.total, fisher_trace_emp: emp.total, sharpness_avg: sh.avg, sharpness_worst: sh.worst };
  for (const [b, v] of Object.entries(mc.perBlock)) row[`fisher_trace@${b}`] = v;
  for (const [b, v] of Object.entries(emp.perBlock)) row[`fisher_trace_emp@${b}`] = v;
  if (reference) for (const [b, v] of Object.entries(await weightDistance(net, reference))) row[`weight_dist@${b}`] = v;
  return row;
}

/**
 * Steps after which a dynamics row is written. 'auto': half-way through the
 * first epoch (the early period moves fastest), then after epochs 1, 2, 4, 8,
 * 16, ... and at the end, so the cost stays a small share of a run.
 */
export function isDynamicsStep(every: number | 'auto', step: number, stepsPerEpoch: number, totalSteps: number): boolean {
  if (every === 0) return false;
  if (every !== 'auto') return step % every === 0 || step === totalSteps;
  if (step === 0 || step === totalSteps) return true;
  if (step < stepsPerEpoch) return step === Math.ceil(stepsPerEpoch / 2);
  if (step % stepsPerEpoch !== 0) return false;
  const e = step / stepsPerEpoch;
  return (e & (e - 1)) === 0;
}
