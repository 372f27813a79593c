import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { augmentBatch } from '../src/data/augment';
import { filterClasses, findNode, randomSplit, shuffleParents } from '../src/hierarchy/transform';
import { taxonomyTree } from '../src/hierarchy/taxonomy';
import { coarsening } from '../src/hierarchy/tree';
import { UsageError } from '../src/util/errors';
import { Rng } from '../src/util/rng';
import { cli, tmpDir } from './helpers';
import { LEAVES, TAXONOMY, writeFolderDataset } from './data-fixtures';

function tree() {
  const rows = TAXONOMY.trim().split('\n').slice(1).map((l, i) => ({ names: l.split(','), key: l.split(',')[2], where: `line ${i + 2}` }));
  return taxonomyTree(['family', 'genus', 'species'], rows, 'taxonomy.csv').hierarchy;
}

test('findNode: by id, by path, by unique name; ambiguous names list the candidate paths', () => {
  const h = tree();
  assert.equal(findNode(h, 'F1/Alpha', 'k'), 'F1/Alpha');
  assert.equal(findNode(h, 'Beta', 'k'), 'F1/Beta');
  assert.equal(findNode(h, 'g2', 'k'), 'F2/Gamma/g2');
  assert.throws(() => findNode(h, 'Alpha', 'data.include'), (e: Error) => e instanceof UsageError && /data\.include: 'Alpha' is ambiguous: 2 nodes carry that name: F1\/Alpha \(F1\/Alpha\); F2\/Alpha \(F2\/Alpha\)/.test(e.message));
  assert.throws(() => findNode(h, 'Gama', 'data.exclude'), /no class or node 'Gama'.*Did you mean 'Gamma'/);
});

test('filterClasses: include and exclude at any level, class map, pruned tree', () => {
  const h = tree();
  const t = filterClasses(h, ['F1'], ['a2']);
  assert.deepEqual([...t.hierarchy.classes], ['F1/Alpha/a1', 'F1/Beta/b1']);
  assert.deepEqual(Array.from(t.classMap), h.classes.map((c) => ['F1/Alpha/a1', 'F1/Beta/b1'].indexOf(c)));
  assert.ok(!t.hierarchy.nodes.has('F2'));
  assert.equal(t.hierarchy.resolveLevel('genus').classes.length, 2);
  assert.throws(() => filterClasses(h, ['F1'], ['F1']), /leave no class/);
});

test('relabel: random_split:K adds K pseudo-subclasses under every class; shuffle_parents keeps counts', () => {
  const h = tree();
  const r = randomSplit(h, 3);
  assert.equal(r.hierarchy.classes.length, 18);
  const leaf = r.hierarchy.leafLevel();
  const old = r.hierarchy.resolveLevel('depth:3');
  assert.equal(old.classes.length, 6);
  assert.ok(coarsening(leaf, old));
  const s = shuffleParents(h, 3);
  const genusCount = (hh: typeof h) => hh.resolveLevel('genus').classes.map((g) => hh.node(g).children.length).sort().join(',');
  assert.equal(genusCount(s.hierarchy), genusCount(h));
  const moved = h.classes.filter((c) => s.hierarchy.node(c).parent !== h.node(c).parent).length;
  assert.ok(moved > 0, 'some leaf changed parent');
  assert.deepEqual(shuffleParents(h, 3).hierarchy.classes.map((c) => shuffleParents(h, 3).hierarchy.node(c).parent), s.hierarchy.classes.map((c) => s.hierarchy.node(c).parent));
});

test('data.relabel and data.include through loadDataset and the CLI', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: TAXONOMY, leaves: LEAVES });
  const cfg = (...sets: string[]) => resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=6', 'data.cache_dir=null', ...sets])]);
  const split = await loadDataset(cfg('data.relabel=random_split:2'), () => {});
  assert.equal(split.hierarchy.classes.length, 12);
  // Balanced: 6 training images per class dealt to 2 pseudo-classes = 3 each.
  const counts = new Array(12).fill(0);
  for (const y of split.train.y) counts[y]++;
  assert.deepEqual(counts, new Array(12).fill(3));
  const shuffled = await loadDataset(cfg('data.relabel=shuffle_parents'), () => {});
  assert.deepEqual(shuffled.train.y, (await loadDataset(cfg(), () => {})).train.y);
  const runs = tmpDir();
  const r = cli(['pretrain', '--set', 'data.format=imagefolder', '--set', `data.root=${root}`, '--set', 'data.image_size=8', '--set', 'data.cache_dir=null', '--set', 'data.include=[F2]', '--set', 'train.epochs=1', '--set', 'data.val_fraction=0', '--run-dir', `${runs}/a`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /3 classes, 18 training images/);
  const amb = cli(['pretrain', '--set', 'data.format=imagefolder', '--set', `data.root=${root}`, '--set', 'data.include=[Alpha]', '--run-dir', `${runs}/b`]);
  assert.equal(amb.code, 2);
  assert.match(amb.stderr, /ambiguous.*F1\/Alpha.*F2\/Alpha/);
});

test('data.relabel on synthetic data: labels change, pixels and the features stay', async () => {
  const cfg = (...sets: string[]) => resolveConfig([parseSets(['data.synthetic.train_samples=192', 'data.synthetic.test_samples=96', ...sets])]);
  const plain = await loadDataset(cfg(), () => {});
  const split = await loadDataset(cfg('data.relabel=random_split:2'), () => {});
  assert.deepEqual(split.train.x, plain.train.x);
  assert.equal(split.hierarchy.classes.length, 48);
  // Each pseudo-class lies under its example's true leaf, and each leaf's examples are dealt evenly.
  const perPseudo = new Array(48).fill(0);
  split.train.y.forEach((y, i) => {
    assert.equal(split.hierarchy.node(split.hierarchy.classes[y]).parent, plain.hierarchy.classes[plain.train.y[i]]);
    perPseudo[y]++;
  });
  const perLeaf = new Array(24).fill(0);
  plain.train.y.forEach((y) => perLeaf[y]++);
  perLeaf.forEach((n, leaf) => assert.ok(Math.abs(perPseudo[2 * leaf] - perPseudo[2 * leaf + 1]) <= 1, `leaf ${leaf}: ${n} dealt evenly`));
  const shuffled = await loadDataset(cfg('data.relabel=shuffle_parents'), () => {});
  assert.deepEqual(shuffled.train.y, plain.train.y);
  assert.deepEqual(shuffled.features, plain.features);
  const parentsOf = (d: typeof plain) => d.hierarchy.classes.map((c) => d.hierarchy.node(c).parent);
  assert.notDeepEqual(parentsOf(shuffled), parentsOf(plain));
  await assert.rejects(loadDataset(cfg('data.relabel=random_split:2', 'eval.ood_synthetic=[all_hard]'), () => {}), /no pseudo-class labels/);
});

test('augmentBatch: flips and shifts per image, deterministic for a seed, identity when empty', () => {
  const H = 4, W = 5, C = 2, n = 64;
  const x = Float32Array.from({ length: n * H * W * C }, (_, i) => (i % 97) / 97);
  const orig = x.slice();
  assert.deepEqual(augmentBatch(x.slice(), n, [H, W, C], [], new Rng(1)), orig);
  const a = augmentBatch(x.slice(), n, [H, W, C], ['flip'], new Rng(1));
  const b = augmentBatch(x.slice(), n, [H, W, C], ['flip'], new Rng(1));
  assert.deepEqual(a, b);
  let flipped = 0;
  const per = H * W * C;
  for (let i = 0; i < n; i++) {
    const img = a.subarray(i * per, (i + 1) * per);
    const src = orig.subarray(i * per, (i + 1) * per);
    const same = img.every((v, j) => v === src[j]);
    const mirrored = img.every((v, j) => {
      const c = j % C, xx = Math.floor(j / C) % W, yy = Math.floor(j / C / W);
      return v === src[(yy * W + (W - 1 - xx)) * C + c];
    });
    assert.ok(same || mirrored, `image ${i} is the original or its mirror`);
    if (!same) flipped++;
  }
  assert.ok(flipped > 16 && flipped < 48, `about half flipped (${flipped})`);
  const c = augmentBatch(x.slice(), n, [H, W, C], ['crop'], new Rng(2));
  assert.ok(c.every((v) => orig.includes(v)), 'crop only moves existing pixels');
  assert.notDeepEqual(c, orig);
});
