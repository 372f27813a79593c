import * as path from 'node:path';
import { Config } from '../../config/schema';
import { clusterSplit, randomSplit, shuffleParents } from '../../hierarchy/transform';
import { Hierarchy, Level } from '../../hierarchy/tree';
import { runFeatures } from '../../measure/features';
import { UsageError } from '../../util/errors';
import { Rng } from '../../util/rng';
import { kmeans, nearestCenter } from './kmeans';
import { Dataset } from '../types';

/**
 * data.relabel on class labels, for any format (no pixels involved):
 * - `random_split:K`: every class becomes K pseudo-subclasses; each split's
 *   examples of a class are dealt to them round-robin in a seeded order, so the
 *   pseudo-classes are balanced and carry no information beyond their class;
 * - `shuffle_parents`: the leaves keep their labels but hang under random parents.
 * `cluster:K` needs pixels and a trained network: it is applied after decoding
 * by `clusterRelabelDataset`, so here it leaves the labels as they are.
 * `labels` holds each split's class indices (train first, then test); the
 * results come back in the same order.
 */
export function relabel(h: Hierarchy, cfg: Config, labels: readonly Int32Array[]): { hierarchy: Hierarchy; labels: Int32Array[] } {
  const spec = cfg.data.relabel;
  if (spec?.startsWith('random_split:')) {
    const t = randomSplit(h, Number(spec.split(':')[1]));
    const dealt = labels.map((ys, part) => {
      const order = Array.from(ys, (_, i) => i);
      new Rng(cfg.data.seed, 405 + part).shuffle(order);
      const seen = new Map<number, number>();
      const out = new Int32Array(ys.length);
      for (const i of order) {
        const n = seen.get(ys[i]) ?? 0;
        seen.set(ys[i], n + 1);
        out[i] = t.pseudoOf(ys[i], n);
      }
      return out;
    });
    return { hierarchy: t.hierarchy, labels: dealt };
  }
  if (spec === 'shuffle_parents') return { hierarchy: shuffleParents(h, cfg.data.seed).hierarchy, labels: [...labels] };
  return { hierarchy: h, labels: [...labels] };
}

/** What hierarchy.json records about a cluster:K relabelling. */
export interface ClusterRecord {
  relabel: string;
  /** The run whose penultimate features were clustered (absolute path) and its run id. */
  from: string;
  from_run_id: string | null;
  /** The level whose classes were split (the level that run trained at). */
  level: string;
  k: number;
  /** data.seed, which seeds k-means++. */
  seed: number;
  feature_dim: number;
  /** Per class of the level: its path, the training images per pseudo-class, k-means inertia and iterations. */
  classes: Array<{ class: string; train_sizes: number[]; test_sizes: number[]; inertia: number; iterations: number }>;
}

/**
 * Pseudo-class labels by k-means within each class of `level` (Hong et al.
 * 2023 compare such clustering-derived fine labels with a manual taxonomy):
 * the training examples of each class are clustered into K groups on their
 * features (k-means++ seeded by `seed` and the class index); each test
 * example goes to the nearest centre of its own class. Features: [n x dim]
 * row-major, one row per example of `trainY` / `testY` (dataset class
 * indices). Returns the new hierarchy (see clusterSplit), the new labels and
 * the record. A class with fewer training images than K is a UsageError.
 */
export function clusterLabels(
  h: Hierarchy,
  level: Level,
  k: number,
  train: { x: Float32Array; y: Int32Array },
  test: { x: Float32Array; y: Int32Array },
  dim: number,
  seed: number,
): { hierarchy: Hierarchy; labels: [Int32Array, Int32Array]; classes: ClusterRecord['classes'] } {
  const t = clusterSplit(h, level, k);
  const trainOut = new Int32Array(train.y.length).fill(-1);
  const testOut = new Int32Array(test.y.length).fill(-1);
  const classes: ClusterRecord['classes'] = [];
  const gather = (x: Float32Array, rows: number[]) => {
    const out = new Float32Array(rows.length * dim);
    rows.forEach((r, i) => out.set(x.subarray(r * dim, (r + 1) * dim), i * dim));
    return out;
  };
  level.classes.forEach((cls, c) => {
    const rows = (y: Int32Array) => Array.from(y, (v, i) => (level.classOf[v] === c ? i : -1)).filter((i) => i >= 0);
    const trRows = rows(train.y);
    const teRows = rows(test.y);
    if (trRows.length < k) {
      throw new UsageError(`data.relabel cluster:${k}: class '${h.path(cls)}' of level '${level.name}' has ${trRows.length} training image(s), fewer than K = ${k}. Lower K, or leave the class out with data.exclude.`);
    }
    const xs = gather(train.x, trRows);
    const km = kmeans(xs, trRows.length, dim, k, new Rng(seed, 7000 + c));
    trRows.forEach((r, i) => (trainOut[r] = t.pseudoOf(c, km.assign[i])));
    const testSizes = new Array<number>(k).fill(0);
    const xt = gather(test.x, teRows);
    teRows.forEach((r, i) => {
      const [j] = nearestCenter(xt, i, km.centers, k, dim);
      testOut[r] = t.pseudoOf(c, j);
      testSizes[j]++;
    });
    classes.push({ class: h.path(cls), train_sizes: km.sizes, test_sizes: testSizes, inertia: km.inertia, iterations: km.iterations });
  });
  // Examples under no class of the level (a nodes: level drops some) keep no label.
  const dropped = [...trainOut, ...testOut].filter((v) => v < 0).length;
  if (dropped) throw new UsageError(`data.relabel cluster:${k}: ${dropped} example(s) fall under no class of level '${level.name}'. Cluster a level that covers every class.`);
  return { hierarchy: t.hierarchy, labels: [trainOut, testOut], classes };
}

/**
 * data.relabel cluster:K on a loaded dataset: the penultimate features of run
 * data.relabel_from on every image, k-means within each class of the level
 * that run trained at, and the dataset relabelled to the pseudo-classes. The
 * record goes to hierarchy.json (Dataset.relabelRecord).
 */
export async function clusterRelabelDataset(d: Dataset, cfg: Config): Promise<Dataset> {
  const spec = cfg.data.relabel!;
  const k = Number(spec.split(':')[1]);
  if (!cfg.data.relabel_from) throw new UsageError(`data.relabel ${spec} clusters the penultimate features of a trained network: set data.relabel_from to the folder of a finished run (e.g. a pretraining run at the level to split).`);
  const from = path.resolve(cfg.data.relabel_from);
  const f = await runFeatures(from, d, 'data.relabel_from');
  let level: Level;
  try {
    level = d.hierarchy.resolveLevel(f.levelSpec);
  } catch (e) {
    throw new UsageError(`data.relabel_from '${from}' trained at level '${f.levelSpec}', which this data's hierarchy does not have (${(e as Error).message}). Cluster with a run trained on this hierarchy.`);
  }
  const r = clusterLabels(d.hierarchy, level, k, { x: f.train, y: d.train.y }, { x: f.test, y: d.test.y }, f.dim, cfg.data.seed!);
  const record: ClusterRecord = { relabel: spec, from, from_run_id: f.runId, level: level.name, k, seed: cfg.data.seed!, feature_dim: f.dim, classes: r.classes };
  return { ...d, hierarchy: r.hierarchy, train: { ...d.train, y: r.labels[0] }, test: { ...d.test, y: r.labels[1] }, relabelRecord: record as unknown as Record<string, unknown> };
}
