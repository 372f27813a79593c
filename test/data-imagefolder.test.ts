import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { readAll } from '../src/data/cache/store';
import { UsageError } from '../src/util/errors';
import { cli, readJson, tmpDir } from './helpers';
import { LEAVES, TAXONOMY, writeFolderDataset } from './data-fixtures';

function cfgFor(root: string, ...sets: string[]) {
  return resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=8', 'data.cache_dir=null', 'data.channels=1', 'data.duplicates=keep', ...sets])]);
}

const quiet = () => {};

test('imagefolder: taxonomy levels, classes by path, pixels in [0,1] at the configured size', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: TAXONOMY, leaves: LEAVES });
  const ds = await loadDataset(cfgFor(root), quiet);
  const h = ds.hierarchy;
  assert.deepEqual(ds.shape, [8, 8, 1]);
  assert.equal(ds.train.y.length, 36);
  assert.equal(ds.test.y.length, 18);
  const px = readAll(ds.train.x);
  assert.equal(px.length, 36 * 64);
  assert.ok(px.every((v) => v >= 0 && v <= 1));
  assert.ok(px.some((v) => v > 0.05));
  assert.equal(h.classes.length, 6);
  // 'Alpha' under F1 and under F2 are two genera.
  const genus = h.resolveLevel('genus');
  assert.deepEqual(genus.classes.map((c) => h.path(c)), ['F1/Alpha', 'F1/Beta', 'F2/Alpha', 'F2/Gamma']);
  assert.equal(h.resolveLevel('family').classes.length, 2);
  assert.ok(ds.train.ids.includes('train/a1/img0.png'));
  // Labels follow the folders.
  const a1 = h.classes.indexOf('F1/Alpha/a1');
  assert.ok(ds.train.ids.filter((_, i) => ds.train.y[i] === a1).every((id) => id.startsWith('train/a1/')));
});

test('imagefolder: JPEG, PPM and 1-bit PNG decode, to 1 or 3 channels', async () => {
  for (const kind of ['jpg', 'ppm', 'png1'] as const) {
    const root = tmpDir();
    await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nG,y\nH,z\n', leaves: { x: [2, 1], y: [2, 1], z: [2, 1] }, kind });
    for (const channels of [1, 3]) {
      const ds = await loadDataset(cfgFor(root, `data.channels=${channels}`, 'data.image_size=5'), quiet);
      assert.equal(ds.skipped, 0, kind);
      assert.deepEqual(ds.shape, [5, 5, channels]);
      const px = readAll(ds.train.x);
      assert.equal(px.length, 6 * 25 * channels);
      assert.ok(px.every((v) => v >= 0 && v <= 1), kind);
    }
    if (kind === 'png1') {
      const png = fs.readFileSync(path.join(root, 'train/x/img0.png'));
      assert.equal(png[24], 1, 'the fixture is a 1-bit PNG (IHDR bit depth)');
    }
  }
});

test('imagefolder: data.test_fraction splits ROOT/<leaf>/ per class, seeded', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [10, 0], y: [5, 0] }, flat: true });
  const a = await loadDataset(cfgFor(root, 'data.test_fraction=0.2'), quiet);
  assert.equal(a.train.y.length + a.test.y.length, 15);
  assert.equal(a.test.y.length, 3);
  const b = await loadDataset(cfgFor(root, 'data.test_fraction=0.2'), quiet);
  assert.deepEqual(a.test.ids, b.test.ids);
  const c = await loadDataset(cfgFor(root, 'data.test_fraction=0.2', 'data.seed=7'), quiet);
  assert.equal(c.test.ids.length, 3);
  assert.equal(new Set([...a.train.ids, ...a.test.ids]).size, 15);
  await assert.rejects(loadDataset(cfgFor(root), quiet), /no train\/ folder.*data\.test_fraction/);
});

async function usageError(root: string, re: RegExp, ...sets: string[]) {
  await assert.rejects(loadDataset(cfgFor(root, ...sets), quiet), (e: Error) => {
    assert.ok(e instanceof UsageError, `${e.name}: ${e.message}`);
    assert.match(e.message, re);
    return true;
  });
}

test('imagefolder: bad taxonomies and folders are usage errors naming the entries', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nG,y\n', leaves: { x: [2, 1], y: [2, 1], stray1: [1, 1], stray2: [1, 0] } });
  await usageError(root, /2 leaf folder\(s\).*missing from .*taxonomy\.csv: stray1, stray2/);
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), 'group,leaf\nG,x\nG,y\nG,stray1\nH,stray2\nH,ghost\nH,ghost2\n');
  await usageError(root, /2 taxonomy row\(s\).*no training folder.*ghost, ghost2/);
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), 'group,leaf\nG,x\nH,x\nG,y\nG,stray1\nH,stray2\n');
  await usageError(root, /1 class\(es\) have two different parents: 'x' under 'H' \(line 3\) and 'G' \(line 2\)/);
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), 'group,leaf\nG,x\nG,y\nG,stray1\n,stray2\n');
  await usageError(root, /do not name all 2 levels/);
  // An empty class: its training folder exists but holds no image.
  const root2 = tmpDir();
  await writeFolderDataset(root2, { taxonomy: 'group,leaf\nG,x\nG,y\n', leaves: { x: [2, 1], y: [0, 1] } });
  await usageError(root2, /1 class\(es\) have no training images: G\/y/);
});

test('imagefolder: a truncated image is skipped with one warning, or fails with on_bad_image=fail', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [3, 1], y: [3, 1] } });
  const good = fs.readFileSync(path.join(root, 'train/x/img0.png'));
  fs.writeFileSync(path.join(root, 'train/x/img1.png'), good.subarray(0, Math.floor(good.length / 2)));
  fs.writeFileSync(path.join(root, 'train/y/img2.png'), 'not an image');
  const lines: string[] = [];
  const ds = await loadDataset(cfgFor(root), (l) => lines.push(l));
  assert.equal(ds.skipped, 2);
  assert.equal(ds.train.y.length, 4);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /skipped 2 image\(s\) could not be decoded: train\/x\/img1\.png .*train\/y\/img2\.png/);
  await usageError(root, /2 image\(s\) could not be decoded.*on_bad_image=skip/, 'data.on_bad_image=fail');
  // Through the CLI: skipped_images in summary.json; with fail, exit 2 and no run folder.
  const runs = tmpDir();
  const ok = cli(['pretrain', '--set', 'data.format=imagefolder', '--set', `data.root=${root}`, '--set', 'data.image_size=8', '--set', 'data.cache_dir=null', '--set', 'train.epochs=1', '--set', 'data.val_fraction=0', '--run-dir', path.join(runs, 'a')]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, /warning: skipped 2 image/);
  assert.equal(readJson(path.join(runs, 'a', 'summary.json')).skipped_images, 2);
  const bad = cli(['pretrain', '--set', 'data.format=imagefolder', '--set', `data.root=${root}`, '--set', 'data.on_bad_image=fail', '--set', 'data.cache_dir=null', '--run-dir', path.join(runs, 'b')]);
  assert.equal(bad.code, 2, bad.stderr);
  assert.ok(!fs.existsSync(path.join(runs, 'b')));
});

test('imagefolder: pretrain at the finest level and fine-tune at the coarsest through the CLI', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: TAXONOMY, leaves: LEAVES });
  const runs = tmpDir();
  const common = ['--set', 'data.format=imagefolder', '--set', `data.root=${root}`, '--set', 'data.image_size=8', '--set', `data.cache_dir=${path.join(runs, 'cache')}`, '--set', 'train.epochs=2'];
  const h = cli(['hierarchy', ...common.slice(0, 8), '--json']);
  assert.equal(h.code, 0, h.stderr);
  const rep = JSON.parse(h.stdout);
  assert.deepEqual(rep.levels.map((l: { name: string; classes: number }) => [l.name, l.classes]), [['family', 2], ['genus', 4], ['species', 6]]);
  const pre = cli(['pretrain', ...common, '--level', 'leaf', '--run-dir', path.join(runs, 'pre')]);
  assert.equal(pre.code, 0, pre.stderr);
  const fin = cli(['finetune', '--from', path.join(runs, 'pre'), '--level', 'coarse', '--run-dir', path.join(runs, 'fin')]);
  assert.equal(fin.code, 0, fin.stderr);
  const s = readJson(path.join(runs, 'fin', 'summary.json'));
  assert.equal(s.level, 'family');
  assert.equal(s.num_classes, 2);
  assert.ok(fs.readdirSync(path.join(runs, 'cache')).length >= 2);
});
