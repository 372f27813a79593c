import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { makeSplit } from '../src/data/labels/split';
import { readAll } from '../src/data/cache/store';
import { UsageError } from '../src/util/errors';
import { cli, tmpDir } from './helpers';

/** One CIFAR record's pixel planes: red, green and blue each constant but the first pixel, which differs per image. */
function planes(r: number, g: number, b: number, n: number): Buffer {
  const p = Buffer.alloc(3072);
  p.fill(r, 0, 1024);
  p.fill(g, 1024, 2048);
  p.fill(b, 2048, 3072);
  p[0] = n % 256; // distinct content per image
  return p;
}

/** CIFAR-10's binary layout: 5 training batches and a test batch of 1-byte-label records, names in batches.meta.txt. */
function writeCifar10(dir: string, perClassPerBatch = 1): string[] {
  const names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'batches.meta.txt'), names.join('\n') + '\n\n');
  let n = 0;
  const batch = (file: string) => {
    const recs: Buffer[] = [];
    for (let c = 0; c < 10; c++) for (let j = 0; j < perClassPerBatch; j++) recs.push(Buffer.from([c]), planes(10 * c, 200, 255 - 10 * c, n++));
    fs.writeFileSync(path.join(dir, file), Buffer.concat(recs));
  };
  for (let b = 1; b <= 5; b++) batch(`data_batch_${b}.bin`);
  batch('test_batch.bin');
  return names;
}

/** CIFAR-100's binary layout (coarse and fine label bytes), 2 superclasses of 2 classes each. */
function writeCifar100(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'coarse_label_names.txt'), 'aquatic_mammals\nflowers\n');
  fs.writeFileSync(path.join(dir, 'fine_label_names.txt'), 'beaver\ndolphin\norchid\npoppy\n');
  const parent = [0, 0, 1, 1];
  let n = 0;
  const file = (name: string, per: number) => {
    const recs: Buffer[] = [];
    for (let k = 0; k < 4; k++) for (let j = 0; j < per; j++) recs.push(Buffer.from([parent[k], k]), planes(60 * k, 30, 90, n++));
    fs.writeFileSync(path.join(dir, name), Buffer.concat(recs));
  };
  file('train.bin', 4);
  file('test.bin', 2);
}

const cfgFor = (root: string, ...sets: string[]) => resolveConfig([parseSets(['data.format=cifar', `data.root=${root}`, 'data.image_size=32', 'data.cache_dir=null', ...sets])]);

test('cifar: CIFAR-10 binary batches read as RGB planes, labels named by batches.meta.txt, found inside the folder the archive unpacks', async () => {
  const root = tmpDir();
  const names = writeCifar10(path.join(root, 'cifar-10-batches-bin'));
  const cfg = cfgFor(root);
  const ds = await loadDataset(cfg, () => {});
  assert.equal(cfg.data.channels, 3);
  assert.match(ds.channels!.reason, /CIFAR images are RGB/);
  assert.deepEqual(ds.shape, [32, 32, 3]);
  assert.equal(ds.train.ids.length, 50);
  assert.equal(ds.test.ids.length, 10);
  assert.deepEqual(ds.hierarchy.classes.map((c) => ds.hierarchy.node(c).name), names);
  const k = ds.train.ids.indexOf('data_batch_2.bin/00003');
  assert.equal(ds.train.y[k], 3);
  // Pixel (0, 1) of class 3: R = 30, G = 200, B = 225 (planes interleaved to HWC).
  const px = readAll(ds.train.x, true);
  const at = k * 32 * 32 * 3 + 3;
  assert.deepEqual([px[at], px[at + 1], px[at + 2]].map((v) => Math.round(v * 255)), [30, 200, 225]);
});

test('cifar: CIFAR-100 two-level hierarchy (superclass > class) from the coarse and fine label bytes; its own duplicates are found', async () => {
  const dir = tmpDir();
  writeCifar100(dir);
  // One test record that repeats a training record, as the published test set does a few times.
  const train = fs.readFileSync(path.join(dir, 'train.bin'));
  const test = fs.readFileSync(path.join(dir, 'test.bin'));
  train.copy(test, 0, 3074 * 5, 3074 * 6); // train record 5 (dolphin) over test record 0 (beaver)
  test[0] = 0;
  test[1] = 1;
  fs.writeFileSync(path.join(dir, 'test.bin'), test);
  const cfg = cfgFor(dir);
  const ds = await loadDataset(cfg, () => {});
  const h = ds.hierarchy;
  assert.deepEqual(h.levels().map((l) => [l.name, l.classes.length]), [['superclass', 2], ['class', 4]]);
  assert.equal(h.path(h.classes[ds.train.y[ds.train.ids.indexOf('train.bin/00009')]]), 'flowers/orchid');
  assert.equal(ds.duplicates!.test_in_train, 1);
  assert.deepEqual(ds.duplicates!.examples[0], { test: 'test.bin/00000', same_as: 'train.bin/00005', kind: 'train' });
  assert.equal(ds.test.ids.length, 7);
  assert.equal(makeSplit(ds, cfg).test.length, 7);
  // granular hierarchy lists it (no decode) with both levels.
  const r = cli(['hierarchy', '--json', '--set', 'data.format=cifar', '--set', `data.root=${dir}`, '--set', 'data.cache_dir=null', '--set', 'data.val_fraction=0']);
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout);
  assert.deepEqual(rep.levels.map((l: { name: string; classes: number }) => [l.name, l.classes]), [['superclass', 2], ['class', 4]]);
});

test('cifar: a cut-off file, a missing name file and a class under two superclasses exit 2 naming the file', async () => {
  const dir = tmpDir();
  writeCifar100(dir);
  const t = fs.readFileSync(path.join(dir, 'train.bin'));
  fs.writeFileSync(path.join(dir, 'train.bin'), t.subarray(0, t.length - 10));
  await assert.rejects(loadDataset(cfgFor(dir), () => {}), (e: Error) => e instanceof UsageError && /train\.bin' is \d+ bytes, not a whole number of 3074-byte CIFAR records/.test(e.message));
  t[3074 * 0] = 1; // record 0: beaver under flowers, the rest under aquatic_mammals
  fs.writeFileSync(path.join(dir, 'train.bin'), t);
  await assert.rejects(loadDataset(cfgFor(dir), () => {}), /class 'beaver' appears under two superclasses/);
  const ten = tmpDir();
  writeCifar10(ten);
  fs.rmSync(path.join(ten, 'batches.meta.txt'));
  await assert.rejects(loadDataset(cfgFor(ten), () => {}), /cannot read '.*batches\.meta\.txt', which names the classes/);
  await assert.rejects(loadDataset(cfgFor(tmpDir()), () => {}), /no CIFAR binary files in/);
});
