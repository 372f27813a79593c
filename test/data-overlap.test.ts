import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, readJson, tmpDir } from './helpers';
import { writeFolderDataset } from './data-fixtures';

test('fine-tuning on other data reports its overlap with the source training set by content hash', async () => {
  const a = tmpDir();
  const b = tmpDir();
  await writeFolderDataset(a, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [4, 2], y: [4, 2] } });
  await writeFolderDataset(b, { taxonomy: 'kind,leaf\nK,p\nL,q\n', leaves: { p: [3, 2], q: [3, 2] } });
  // The same picture under another name in B's test set (A's image generator differs by class index only).
  fs.copyFileSync(path.join(a, 'train/y/img1.png'), path.join(b, 'test/q/copied.png'));
  const runs = tmpDir();
  const common = ['--set', 'data.format=imagefolder', '--set', 'data.image_size=8', '--set', `data.cache_dir=${path.join(runs, 'cache')}`, '--set', 'train.epochs=1', '--set', 'data.val_fraction=0'];
  const pre = cli(['pretrain', ...common, '--set', `data.root=${a}`, '--run-dir', path.join(runs, 'pre')]);
  assert.equal(pre.code, 0, pre.stderr);
  const fin = cli(['finetune', '--from', path.join(runs, 'pre'), '--set', `data.root=${b}`, '--run-dir', path.join(runs, 'fin')]);
  assert.equal(fin.code, 0, fin.stderr);
  const split = readJson<{ source_overlap: Record<string, unknown> }>(path.join(runs, 'fin', 'split.json'));
  // The fixture generator draws picture i of the k-th folder the same in both datasets, so B's
  // 6 training images repeat A's training images; B's test images repeat only A's test images.
  assert.equal(split.source_overlap.test_in_source_train, 1);
  assert.equal(split.source_overlap.train_in_source_train, 6);
  assert.ok((split.source_overlap.test_examples as string[]).includes('test/q/copied.png'));
  assert.match(fin.stderr, /overlap with the source run's training set \(by content hash\): 1 of 5 test and 6 of 6 training images, e.g. test\/q\/copied\.png/);
});
