import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSets, resolveConfig } from '../src/config/load';
import { Config } from '../src/config/schema';
import { levelLabels, makeSplit, noisyLabels, splitFromRecord, splitRecord, stratifiedOrder } from '../src/data/labels/split';
import { syntheticHierarchy } from '../src/data/formats/synthetic';
import { Dataset, Examples } from '../src/data/types';
import { UsageError } from '../src/util/errors';
import { Rng } from '../src/util/rng';
import { FloatStore } from '../src/data/cache/store';

function cfgOf(...sets: string[]): Config {
  return resolveConfig([parseSets(sets)]);
}

/** A dataset without pixels worth looking at: `perClass[k]` examples of class k, shuffled. */
function fakeSet(perClass: number[], prefix: string, seed: number): Examples {
  const y: number[] = [];
  perClass.forEach((n, k) => {
    for (let i = 0; i < n; i++) y.push(k);
  });
  new Rng(seed, 5).shuffle(y);
  return { x: new FloatStore(new Float32Array(y.length), [1, 1, 1]), y: Int32Array.from(y), ids: y.map((_, i) => `${prefix}${i}`) };
}

function fakeDataset(trainPerClass: number[], testPerClass: number[]): Dataset {
  // Only the class count matters to the split: 2 x 5 = 10 classes.
  return {
    hierarchy: syntheticHierarchy([2, 5]),
    shape: [1, 1, 1],
    train: fakeSet(trainPerClass, 'tr', 1),
    test: fakeSet(testPerClass, 'te', 2),
    skipped: 0,
  };
}

function classCounts(y: Int32Array, idx: number[], k: number): number[] {
  const c = new Array(k).fill(0);
  for (const i of idx) c[y[i]]++;
  return c;
}

const spread = (c: number[]) => Math.max(...c) - Math.min(...c);
const isSubset = (a: number[], b: number[]) => {
  const s = new Set(b);
  return a.every((x) => s.has(x));
};

test('stratifiedOrder: every prefix is stratified, and the order is a permutation', () => {
  const labels = fakeSet([30, 30, 30, 30], 'x', 3).y;
  const order = stratifiedOrder(labels, new Rng(7, 401));
  assert.deepEqual([...order].sort((a, b) => a - b), Array.from({ length: 120 }, (_, i) => i));
  for (let n = 1; n <= 120; n++) assert.ok(spread(classCounts(labels, order.slice(0, n), 4)) <= 1, `prefix ${n}`);
  assert.notDeepEqual(order, stratifiedOrder(labels, new Rng(8, 401)));
});

test('subsets are nested and stratified; validation does not move with train_size', () => {
  const ds = fakeDataset(new Array(10).fill(50), new Array(10).fill(30));
  // val_fraction 0.1 of 500 = 50 = 5 per class.
  const full = makeSplit(ds, cfgOf('seed=3'));
  const s200 = makeSplit(ds, cfgOf('seed=3', 'data.train_size=200'));
  const s95 = makeSplit(ds, cfgOf('seed=3', 'data.train_size=95'));
  assert.equal(full.val.length, 50);
  assert.deepEqual(classCounts(ds.train.y, full.val, 10), new Array(10).fill(5));
  assert.equal(full.train.length, 450);
  assert.equal(s200.train.length, 200);
  assert.equal(s95.train.length, 95);
  assert.ok(isSubset(s95.train, s200.train), 'train_size 95 lies inside train_size 200');
  assert.ok(isSubset(s200.train, full.train));
  assert.deepEqual(classCounts(ds.train.y, s200.train, 10), new Array(10).fill(20));
  assert.ok(spread(classCounts(ds.train.y, s95.train, 10)) <= 1);
  assert.deepEqual(s200.val, full.val);
  assert.deepEqual(s95.val, full.val);
  for (const s of [full, s200, s95]) assert.ok(!s.train.some((i) => s.val.includes(i)), 'val and train are disjoint');
  // Indices are sorted ascending (split.json lists ids in dataset order).
  assert.deepEqual(s95.train, [...s95.train].sort((a, b) => a - b));
  // The split follows data.seed, not seed alone.
  const other = makeSplit(ds, cfgOf('seed=4', 'data.train_size=95'));
  assert.notDeepEqual(other.train, s95.train);
  assert.deepEqual(makeSplit(ds, cfgOf('seed=4', 'data.seed=3', 'data.train_size=95')).train, s95.train);
  // Changing val_fraction nests validation sets too.
  const v20 = makeSplit(ds, cfgOf('seed=3', 'data.val_fraction=0.2'));
  assert.ok(isSubset(full.val, v20.val));
});

test('stratification keeps counts within 1 for uneven class sizes while no class runs out', () => {
  // Class sizes 40..58; val 10% of 490 = 49.
  const ds = fakeDataset([40, 42, 44, 46, 48, 50, 52, 54, 56, 58], new Array(10).fill(10));
  const s = makeSplit(ds, cfgOf('seed=1', 'data.train_size=123'));
  assert.equal(s.val.length, 49);
  assert.ok(spread(classCounts(ds.train.y, s.val, 10)) <= 1);
  // Validation plus training is a prefix of one stratified order.
  assert.ok(spread(classCounts(ds.train.y, [...s.val, ...s.train], 10)) <= 1);
  assert.ok(spread(classCounts(ds.train.y, s.train, 10)) <= 2);
});

test(
  'a training subset is stratified on its own when validation is not a whole number of rounds',
  () => {
    // 10 classes x 50; val 0.098 x 500 = 49 (4.9 rounds); 20 training examples should be 2 per class.
    const ds = fakeDataset(new Array(10).fill(50), new Array(10).fill(5));
    for (const seed of [0, 1, 3]) {
      const s = makeSplit(ds, cfgOf(`seed=${seed}`, 'data.val_fraction=0.098', 'data.train_size=20'));
      assert.deepEqual(classCounts(ds.train.y, s.train, 10), new Array(10).fill(2), `seed ${seed}`);
    }
  },
);

test('train_per_class caps each class and nests', () => {
  const ds = fakeDataset(new Array(10).fill(50), new Array(10).fill(30));
  const k7 = makeSplit(ds, cfgOf('data.train_per_class=7'));
  const k12 = makeSplit(ds, cfgOf('data.train_per_class=12'));
  assert.deepEqual(classCounts(ds.train.y, k7.train, 10), new Array(10).fill(7));
  assert.ok(isSubset(k7.train, k12.train));
  assert.deepEqual(k7.val, k12.val);
  // Both caps: 7 per class, then the first 33 of those.
  const both = makeSplit(ds, cfgOf('data.train_per_class=7', 'data.train_size=33'));
  assert.equal(both.train.length, 33);
  assert.ok(isSubset(both.train, k7.train));
  assert.ok(spread(classCounts(ds.train.y, both.train, 10)) <= 1);
});

test('test_size caps the test set, stratified and nested', () => {
  const ds = fakeDataset(new Array(10).fill(20), new Array(10).fill(30));
  const all = makeSplit(ds, cfgOf());
  const t50 = makeSplit(ds, cfgOf('data.test_size=50'));
  const t23 = makeSplit(ds, cfgOf('data.test_size=23'));
  assert.equal(all.test.length, 300);
  assert.equal(t50.test.length, 50);
  assert.deepEqual(classCounts(ds.test.y, t50.test, 10), new Array(10).fill(5));
  assert.ok(spread(classCounts(ds.test.y, t23.test, 10)) <= 1);
  assert.ok(isSubset(t23.test, t50.test));
  // A cap above the size takes everything.
  assert.equal(makeSplit(ds, cfgOf('data.test_size=1000')).test.length, 300);
  // Test selection does not touch train/val.
  assert.deepEqual(t23.train, all.train);
  assert.deepEqual(t23.val, all.val);
});

test('a train_size larger than what remains is refused', () => {
  const ds = fakeDataset(new Array(10).fill(20), new Array(10).fill(5));
  // 200 - 20 validation = 180 remain.
  assert.equal(makeSplit(ds, cfgOf('data.train_size=180')).train.length, 180);
  assert.throws(() => makeSplit(ds, cfgOf('data.train_size=181')), (e: unknown) => e instanceof UsageError && /181/.test(e.message) && /180/.test(e.message));
});

test('splitRecord and splitFromRecord round-trip; the hash covers ids and labels', () => {
  const ds = fakeDataset(new Array(10).fill(20), new Array(10).fill(5));
  const s = makeSplit(ds, cfgOf('data.train_size=50'));
  const rec = splitRecord(ds, s) as { train: string[]; val: string[]; test: string[]; hash: string; counts: Record<string, number> };
  assert.deepEqual(rec.counts, { train: 50, val: 20, test: 50 });
  assert.deepEqual(splitFromRecord(ds, rec, 'run'), s);
  const relabelled: Dataset = { ...ds, train: { ...ds.train, y: ds.train.y.map((v) => (v + 1) % 10) } };
  assert.notEqual((splitRecord(relabelled, s) as { hash: string }).hash, rec.hash);
  assert.throws(() => splitFromRecord(ds, { ...rec, train: ['nope'] }, 'run R'), (e: unknown) => e instanceof UsageError && /'nope'/.test(e.message));
});

test('levelLabels maps dataset classes to a level', () => {
  const ds = fakeDataset(new Array(10).fill(3), new Array(10).fill(1));
  const top = ds.hierarchy.depthCut(1); // classes 0-4 -> 0, 5-9 -> 1
  const idx = [0, 1, 2, 3];
  assert.deepEqual([...levelLabels(ds.train, idx, top)], idx.map((i) => (ds.train.y[i] < 5 ? 0 : 1)));
});

test('noisyLabels: fraction, never the true class, deterministic, independent of the subset', () => {
  const n = 10000;
  const K = 5;
  const ids = Array.from({ length: n }, (_, i) => `train-${i}`);
  const rng = new Rng(1);
  const labels = Int32Array.from({ length: n }, () => rng.int(K));
  const original = labels.slice();
  const a = noisyLabels(ids, labels, K, 0.2, 0);
  assert.deepEqual(labels, original, 'the input labels are not modified');
  // Binomial(10000, 0.2): sd 40; the draw is a fixed hash, so this bound is not flaky.
  assert.ok(Math.abs(a.flipped - 2000) < 200, `flipped ${a.flipped}`);
  let differ = 0;
  const offsets = new Array(K).fill(0);
  for (let i = 0; i < n; i++) {
    assert.ok(a.labels[i] >= 0 && a.labels[i] < K);
    if (a.labels[i] !== labels[i]) {
      differ++;
      offsets[(a.labels[i] - labels[i] + K) % K]++;
    }
  }
  assert.equal(differ, a.flipped, 'every flip changes the label');
  // Flips spread over every other class (offset 1..K-1 ~ flipped / 4 each).
  assert.equal(offsets[0], 0);
  for (let o = 1; o < K; o++) assert.ok(offsets[o] > a.flipped / 8, `offset ${o}: ${offsets[o]}`);

  // Deterministic per seed, different across seeds.
  assert.deepEqual(noisyLabels(ids, labels, K, 0.2, 0), a);
  const b = noisyLabels(ids, labels, K, 0.2, 1);
  assert.notDeepEqual(b.labels, a.labels);

  // A subset in another order gets the same noisy label per id.
  const sub = Array.from({ length: 1000 }, (_, j) => n - 1 - 7 * j);
  const sa = noisyLabels(sub.map((i) => ids[i]), Int32Array.from(sub, (i) => labels[i]), K, 0.2, 0);
  sub.forEach((i, j) => assert.equal(sa.labels[j], a.labels[i], `id ${ids[i]}`));

  // Which examples flip does not depend on the fraction: a lower fraction flips a subset.
  const low = noisyLabels(ids, labels, K, 0.05, 0);
  for (let i = 0; i < n; i++) if (low.labels[i] !== labels[i]) assert.equal(low.labels[i], a.labels[i]);
  assert.ok(Math.abs(low.flipped - 500) < 100, `flipped ${low.flipped}`);

  // Edge cases.
  assert.equal(noisyLabels(ids, labels, K, 0, 0).flipped, 0);
  assert.equal(noisyLabels(ids, labels, K, 1, 0).flipped, n);
  assert.equal(noisyLabels(ids, new Int32Array(n), 1, 0.5, 0).flipped, 0, 'one class: nothing to flip to');
  // Two classes: a flip is always to the other one.
  const two = noisyLabels(ids, Int32Array.from(labels, (v) => v % 2), 2, 0.3, 0);
  for (let i = 0; i < n; i++) if (two.labels[i] !== labels[i] % 2) assert.equal(two.labels[i], 1 - (labels[i] % 2));
});
