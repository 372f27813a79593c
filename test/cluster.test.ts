import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { kmeans } from '../src/data/labels/kmeans';
import { clusterLabels } from '../src/data/labels/relabel';
import { clusterSplit } from '../src/hierarchy/transform';
import { coarserLevels, Hierarchy } from '../src/hierarchy/tree';
import { Rng } from '../src/util/rng';
import { cli, QUICKSTART, readJson, tmpDir } from './helpers';

/** n points around each of the given centres (spread 0.1), in a shuffled order; returns the points and their true blob. */
function blobs(centres: number[][], n: number, seed: number): { x: Float32Array; truth: Int32Array; d: number } {
  const d = centres[0].length;
  const rng = new Rng(seed, 1);
  const order = Array.from({ length: centres.length * n }, (_, i) => i);
  rng.shuffle(order);
  const x = new Float32Array(order.length * d);
  const truth = new Int32Array(order.length);
  order.forEach((o, i) => {
    const c = Math.floor(o / n);
    truth[i] = c;
    for (let t = 0; t < d; t++) x[i * d + t] = centres[c][t] + 0.1 * rng.normal();
  });
  return { x, truth, d };
}

/** Two labelings are the same partition (up to renaming the clusters). */
function samePartition(a: Int32Array, b: Int32Array): boolean {
  const ab = new Map<number, number>();
  const ba = new Map<number, number>();
  for (let i = 0; i < a.length; i++) {
    if ((ab.get(a[i]) ?? b[i]) !== b[i] || (ba.get(b[i]) ?? a[i]) !== a[i]) return false;
    ab.set(a[i], b[i]);
    ba.set(b[i], a[i]);
  }
  return true;
}

test('k-means++ recovers well-separated blobs for every seed, is a function of the seed, and keeps every cluster non-empty', () => {
  const { x, truth, d } = blobs([[0, 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5]], 25, 3);
  for (const seed of [0, 1, 2, 3, 4, 5]) {
    const r = kmeans(x, 100, d, 4, new Rng(seed, 9));
    assert.ok(samePartition(r.assign, truth), `seed ${seed}: blobs not recovered`);
    assert.deepEqual([...r.sizes].sort(), [25, 25, 25, 25]);
    // inertia is the sum of squared distances to the returned centres
    let inertia = 0;
    for (let i = 0; i < 100; i++) for (let t = 0; t < d; t++) inertia += (x[i * d + t] - r.centers[r.assign[i] * d + t]) ** 2;
    assert.ok(Math.abs(inertia - r.inertia) < 1e-6 * inertia);
  }
  assert.deepEqual(kmeans(x, 100, d, 3, new Rng(7, 9)).assign, kmeans(x, 100, d, 3, new Rng(7, 9)).assign);
  // Identical points: still k non-empty clusters.
  const same = kmeans(new Float32Array(10).fill(1), 5, 2, 2, new Rng(0, 0));
  assert.deepEqual([...same.sizes].sort(), [1, 4]);
  assert.throws(() => kmeans(x, 3, d, 4, new Rng(0, 0)), /n >= k/);
});

test('cluster:K splits each class of a level into K pseudo-classes, keeps the tree above it and drops the finer levels', () => {
  // group -> kind -> item, 2 x 2 x 2.
  const nodes = ['a', 'b'].flatMap((g) => [{ id: g, parent: null }, ...['0', '1'].flatMap((k) => [{ id: g + k, parent: g }, ...['x', 'y'].map((i) => ({ id: g + k + i, parent: g + k }))])]);
  const items = nodes.filter((n) => n.id.length === 3).map((n) => n.id);
  const h = new Hierarchy('root', nodes, items, new Map([[1, 'group'], [2, 'kind'], [3, 'item']]));
  const kind = h.resolveLevel('kind');
  const t = clusterSplit(h, kind, 3);
  assert.deepEqual(t.hierarchy.classes, ['a0#c0', 'a0#c1', 'a0#c2', 'a1#c0', 'a1#c1', 'a1#c2', 'b0#c0', 'b0#c1', 'b0#c2', 'b1#c0', 'b1#c1', 'b1#c2']);
  assert.equal(t.hierarchy.path('b1#c2'), 'b/b1/b1#c2');
  assert.equal(t.hierarchy.nodes.has('a0x'), false, 'the manual finer level is gone');
  assert.deepEqual(t.hierarchy.levels().map((l) => [l.name, l.classes.length]), [['group', 2], ['kind', 4], ['cluster', 12]]);
  assert.equal(t.pseudoOf(2, 1), 7);
  // Scoring at coarser levels works on the new tree: every pseudo-class maps to its kind and group.
  const leaf = t.hierarchy.leafLevel();
  const maps = coarserLevels(t.hierarchy, leaf);
  assert.deepEqual([...maps.find((m) => m.level.name === 'kind')!.map], [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
  assert.throws(() => clusterSplit(h, kind, 1), /K must be at least 2/);

  // clusterLabels: within each kind the features form two blobs (its two items), so cluster:2 finds the items again.
  const level = h.resolveLevel('kind');
  const y = Int32Array.from({ length: 160 }, (_, i) => i % 8); // item index
  const feat = (ys: Int32Array, seed: number) => {
    const rng = new Rng(seed, 2);
    return Float32Array.from({ length: ys.length * 2 }, (_, j) => (j % 2 === 0 ? ys[j >> 1] * 3 : 0) + 0.2 * rng.normal());
  };
  const testY = Int32Array.from({ length: 40 }, (_, i) => i % 8);
  const r = clusterLabels(h, level, 2, { x: feat(y, 1), y }, { x: feat(testY, 2), y: testY }, 2, 0);
  assert.ok(samePartition(r.labels[0], y), 'train pseudo-classes are the items');
  assert.ok(samePartition(Int32Array.from([...r.labels[0], ...r.labels[1]]), Int32Array.from([...y, ...testY])), 'test images go to the centre of their own item');
  for (let i = 0; i < y.length; i++) assert.equal(Math.floor(r.labels[0][i] / 2), level.classOf[y[i]], 'a pseudo-class stays inside its kind');
  assert.deepEqual(r.classes.map((c) => c.train_sizes), [[20, 20], [20, 20], [20, 20], [20, 20]]);
  assert.throws(() => clusterLabels(h, level, 50, { x: feat(y, 1), y }, { x: feat(testY, 2), y: testY }, 2, 0), /has 40 training image\(s\), fewer than K = 50/);
});

test('data.relabel cluster:K from a real run: hierarchy.json records it, training and coarse fine-tuning run on the pseudo-classes', () => {
  const root = tmpDir();
  const base = ['--config', QUICKSTART, '--quiet', '--set', 'data.synthetic.branching=[2,2,2]', '--set', 'data.synthetic.train_samples=200', '--set', 'data.synthetic.test_samples=80', '--set', 'train.epochs=2', '--set', 'eval.dynamics_every=0'];
  const top = path.join(root, 'top');
  let r = cli(['pretrain', ...base, '--level', 'top', '--run-dir', top]);
  assert.equal(r.code, 0, r.stderr);
  const clu = path.join(root, 'cluster');
  r = cli(['pretrain', ...base, '--level', 'leaf', '--set', 'data.relabel=cluster:3', '--set', `data.relabel_from=${top}`, '--run-dir', clu]);
  assert.equal(r.code, 0, r.stderr);
  const s = readJson(path.join(clu, 'summary.json'));
  assert.equal(s.num_classes, 6, '2 superclasses x 3 clusters');
  const hj = readJson<{ relabel: { relabel: string; k: number; level: string; from: string; from_run_id: string; seed: number; classes: Array<{ class: string; train_sizes: number[]; test_sizes: number[] }> }; levels: Array<{ name: string; classes: string[] }> }>(path.join(clu, 'hierarchy.json'));
  assert.equal(hj.relabel.relabel, 'cluster:3');
  assert.equal(hj.relabel.level, 'superclass');
  assert.equal(hj.relabel.from, top);
  assert.equal(hj.relabel.from_run_id, readJson(path.join(top, 'run.json')).run_id);
  assert.equal(hj.relabel.seed, 0);
  assert.equal(hj.relabel.classes.length, 2);
  // Every training and test image is in exactly one pseudo-class: the synthetic data has 200 training and 80 test samples.
  assert.equal(hj.relabel.classes.reduce((a, c) => a + c.train_sizes.reduce((x, y) => x + y, 0), 0), 200);
  assert.equal(hj.relabel.classes.reduce((a, c) => a + c.test_sizes.reduce((x, y) => x + y, 0), 0), 80);
  assert.ok(hj.relabel.classes.every((c) => c.train_sizes.every((n) => n > 0)));
  assert.deepEqual(hj.levels.map((l) => [l.name, l.classes.length]), [['superclass', 2], ['cluster', 6], ['leaf', 6]]);
  // Seeded: the same run again clusters identically.
  const again = path.join(root, 'again');
  assert.equal(cli(['pretrain', ...base, '--level', 'leaf', '--set', 'data.relabel=cluster:3', '--set', `data.relabel_from=${top}`, '--set', 'train.epochs=0', '--run-dir', again]).code, 0);
  assert.deepEqual(readJson<typeof hj>(path.join(again, 'hierarchy.json')).relabel.classes, hj.relabel.classes);
  // Fine-tuning at the coarsest level from the cluster-pretrained network.
  const ft = path.join(root, 'ft');
  r = cli(['finetune', '--from', clu, '--level', 'top', '--freeze', 'all', '--set', 'train.epochs=1', '--quiet', '--run-dir', ft]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readJson(path.join(ft, 'summary.json')).num_classes, 2);
  // Mistakes are refused with what to do.
  r = cli(['pretrain', ...base, '--set', 'data.relabel=cluster:3', '--run-dir', path.join(root, 'x1')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /set data\.relabel_from to the folder of a finished run/);
  r = cli(['pretrain', ...base, '--set', `data.relabel_from=${top}`, '--run-dir', path.join(root, 'x2')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /data\.relabel_from is set but data\.relabel is null/);
  r = cli(['pretrain', ...base, '--set', 'data.relabel=cluster:3', '--set', `data.relabel_from=${root}`, '--run-dir', path.join(root, 'x3')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /is not a run folder/);
});
