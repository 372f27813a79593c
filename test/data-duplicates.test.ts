import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { findDuplicates } from '../src/data/labels/duplicates';
import { UsageError } from '../src/util/errors';
import { cli, readJson, tmpDir } from './helpers';
import { writeFolderDataset } from './data-fixtures';

const quiet = () => {};

/**
 * An RGB imagefolder with a public dataset's quirks: a test image that is a
 * training image's file (same class), a test image identical to a training
 * image of *another* class, two identical test images under different labels,
 * and a picture repeated inside the training pool.
 */
async function quirkyDataset(root: string): Promise<void> {
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nG,y\nH,z\n', leaves: { x: [5, 3], y: [5, 3], z: [5, 3] } });
  const cp = (a: string, b: string) => fs.copyFileSync(path.join(root, a), path.join(root, b));
  cp('train/x/img1.png', 'test/x/dup-of-train.png');
  cp('train/y/img2.png', 'test/z/dup-other-class.png');
  cp('test/x/img0.png', 'test/y/same-as-x-test.png');
  cp('train/z/img0.png', 'train/z/repeat.png');
}

function cfgFor(root: string, ...sets: string[]) {
  return resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=8', 'data.cache_dir=null', ...sets])]);
}

test('data.duplicates: train/test copies and conflicting test labels are found; drop_test leaves them out, keep keeps them, refuse exits 2', async () => {
  const root = tmpDir();
  await quirkyDataset(root);
  const dropped = await loadDataset(cfgFor(root), quiet);
  const r = dropped.duplicates!;
  assert.equal(r.policy, 'drop_test');
  assert.equal(r.test_in_train, 2);
  assert.equal(r.test_label_conflicts, 2);
  assert.equal(r.dropped, 4);
  assert.equal(r.train_repeats, 1);
  assert.deepEqual(
    r.examples.map((e) => `${e.test}=${e.same_as}`).sort(),
    ['test/x/dup-of-train.png=train/x/img1.png', 'test/x/img0.png=test/y/same-as-x-test.png', 'test/y/same-as-x-test.png=test/x/img0.png', 'test/z/dup-other-class.png=train/y/img2.png'],
  );
  // 9 plain test images + 3 copies - 4 dropped; the training pool is untouched (16 images).
  assert.equal(dropped.test.ids.length, 8);
  assert.equal(dropped.train.ids.length, 16);
  for (const id of ['test/x/dup-of-train.png', 'test/z/dup-other-class.png', 'test/x/img0.png', 'test/y/same-as-x-test.png']) assert.ok(!dropped.test.ids.includes(id), id);

  const kept = await loadDataset(cfgFor(root, 'data.duplicates=keep'), quiet);
  assert.equal(kept.test.ids.length, 12);
  assert.equal(kept.duplicates!.dropped, 0);
  assert.equal([...kept.testInTrain!].filter((v) => v).length, 2);

  await assert.rejects(loadDataset(cfgFor(root, 'data.duplicates=refuse'), quiet), (e: Error) => {
    assert.ok(e instanceof UsageError);
    assert.match(e.message, /2 test image\(s\) have the same file content as a training image \(test\/x\/dup-of-train\.png = train\/x\/img1\.png/);
    assert.match(e.message, /data\.duplicates=drop_test/);
    return true;
  });
});

test('findDuplicates: a clean dataset has none; a test image repeated with the same label is no conflict', () => {
  const h = (...v: number[]) => Uint8Array.from(v.flatMap((x) => [x, 0, 0, 0, 0, 0, 0, 1]));
  const clean = findDuplicates({ hashes: h(1, 2, 3), y: Int32Array.of(0, 1, 1), ids: ['a', 'b', 'c'] }, { hashes: h(4, 5, 5), y: Int32Array.of(0, 1, 1), ids: ['d', 'e', 'f'] }, 'drop_test');
  assert.equal(clean.record.test_in_train + clean.record.test_label_conflicts, 0);
  // A test image matching two training copies counts once.
  const twice = findDuplicates({ hashes: h(7, 7, 3), y: Int32Array.of(0, 0, 1), ids: ['a', 'b', 'c'] }, { hashes: h(7), y: Int32Array.of(1), ids: ['t'] }, 'keep');
  assert.equal(twice.record.test_in_train, 1);
  assert.equal(twice.record.train_repeats, 1);
  assert.equal(twice.record.dropped, 0);
});

test('pretrain and fine-tune on a folder with its own train/test duplicates: reported, not refused; a re-split leak still is', async () => {
  const root = tmpDir();
  await quirkyDataset(root);
  const runs = tmpDir();
  const common = ['--set', 'data.format=imagefolder', '--set', `data.root=${root}`, '--set', 'data.image_size=8', '--set', `data.cache_dir=${path.join(runs, 'cache')}`, '--set', 'train.epochs=1', '--set', 'data.val_fraction=0'];
  const pre = cli(['pretrain', ...common, '--run-dir', path.join(runs, 'pre')]);
  assert.equal(pre.code, 0, pre.stderr);
  assert.match(pre.stderr, /the dataset's own duplicates: 2 test image\(s\) have the same file content as a training image \(test\/x\/dup-of-train\.png = train\/x\/img1\.png, test\/z\/dup-other-class\.png = train\/y\/img2\.png\); 2 test image\(s\) are identical to a test image with another label .*; 4 left out of the test set \(data\.duplicates=drop_test\)/);
  const split = readJson<{ test: string[]; duplicates: Record<string, unknown> }>(path.join(runs, 'pre', 'split.json'));
  assert.equal(split.test.length, 8);
  assert.equal(split.duplicates.dropped, 4);
  assert.equal(split.duplicates.test_in_train, 2);
  const summary = readJson(path.join(runs, 'pre', 'summary.json'));
  assert.equal(summary.duplicate_test_images, 4);
  assert.equal(summary.duplicate_test_images_dropped, 4);
  // The fine-tuning run on the source's own split: no refusal (the policy applied in both stages).
  const fin = cli(['finetune', '--from', path.join(runs, 'pre'), '--freeze', 'all', '--set', 'train.epochs=1', '--run-dir', path.join(runs, 'fin')]);
  assert.equal(fin.code, 0, fin.stderr);
  assert.deepEqual(readJson<{ test: string[] }>(path.join(runs, 'fin', 'split.json')).test, split.test);
  // data.duplicates=keep in both stages: kept on purpose, so not a leak either.
  const preKeep = cli(['pretrain', ...common, '--set', 'data.duplicates=keep', '--run-dir', path.join(runs, 'pre-keep')]);
  assert.equal(preKeep.code, 0, preKeep.stderr);
  assert.equal(readJson<{ test: string[] }>(path.join(runs, 'pre-keep', 'split.json')).test.length, 12);
  const finKeep = cli(['finetune', '--from', path.join(runs, 'pre-keep'), '--freeze', 'all', '--set', 'train.epochs=1', '--run-dir', path.join(runs, 'fin-keep')]);
  assert.equal(finKeep.code, 0, finKeep.stderr);

  // A re-split of one flat folder: the new test set holds images the source trained on.
  const flat = tmpDir();
  await writeFolderDataset(flat, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [8, 0], y: [8, 0] }, flat: true });
  const flatCommon = ['--set', 'data.format=imagefolder', '--set', `data.root=${flat}`, '--set', 'data.image_size=8', '--set', 'data.cache_dir=null', '--set', 'train.epochs=1', '--set', 'data.val_fraction=0'];
  const src = cli(['pretrain', ...flatCommon, '--set', 'data.test_fraction=0.5', '--run-dir', path.join(runs, 'flat')]);
  assert.equal(src.code, 0, src.stderr);
  const leak = cli(['finetune', '--from', path.join(runs, 'flat'), '--set', 'data.seed=1', '--run-dir', path.join(runs, 'leak')]);
  assert.equal(leak.code, 2, leak.stderr);
  assert.match(leak.stderr, /fine-tuning test images are images the source run '.*flat' trained on \(same file content\)/);
  assert.equal(fs.existsSync(path.join(runs, 'leak')), false);
});

test('data.duplicates=drop_test on a test set made only of training copies keeps it whole, says so and records kept_all', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [3, 0], y: [3, 0] } });
  for (const leaf of ['x', 'y']) {
    fs.mkdirSync(path.join(root, 'test', leaf), { recursive: true });
    fs.copyFileSync(path.join(root, 'train', leaf, 'img0.png'), path.join(root, 'test', leaf, 'copy.png'));
  }
  const lines: string[] = [];
  const ds = await loadDataset(cfgFor(root), (l) => lines.push(l));
  assert.equal(ds.test.ids.length, 2);
  assert.equal(ds.duplicates!.kept_all, true);
  assert.equal(ds.duplicates!.dropped, 0);
  assert.match(lines.join('\n'), /warning: every test image \(2\) is one of the dataset's own duplicates; .* they are kept/);
});
