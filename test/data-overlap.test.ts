import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, readJson, tmpDir } from './helpers';
import { writeFolderDataset } from './data-fixtures';

test('fine-tuning on other data: a test image the source trained on is refused by content hash, shared training images are reported', async () => {
  const a = tmpDir();
  const b = tmpDir();
  await writeFolderDataset(a, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [4, 2], y: [4, 2] } });
  await writeFolderDataset(b, { taxonomy: 'kind,leaf\nK,p\nL,q\n', leaves: { p: [3, 2], q: [3, 2] } });
  // The same picture under another name in B's test set (A's image generator differs by class index only).
  fs.copyFileSync(path.join(a, 'train/y/img3.png'), path.join(b, 'test/q/copied.png')); // B trains on pictures 0-2 only: not one of B's own duplicates
  const runs = tmpDir();
  const common = ['--set', 'data.format=imagefolder', '--set', 'data.image_size=8', '--set', `data.cache_dir=${path.join(runs, 'cache')}`, '--set', 'train.epochs=1', '--set', 'data.val_fraction=0'];
  const pre = cli(['pretrain', ...common, '--set', `data.root=${a}`, '--run-dir', path.join(runs, 'pre')]);
  assert.equal(pre.code, 0, pre.stderr);
  const args = ['finetune', '--from', path.join(runs, 'pre'), '--set', `data.root=${b}`, '--run-dir', path.join(runs, 'fin')];
  const refused = cli(args);
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /1 of the 5 fine-tuning test images are images the source run '.*pre' trained on \(same file content\): test\/q\/copied\.png\./);
  assert.equal(fs.existsSync(path.join(runs, 'fin')), false);
  fs.rmSync(path.join(b, 'test/q/copied.png'));
  const fin = cli(args);
  assert.equal(fin.code, 0, fin.stderr);
  const split = readJson<{ source_overlap: Record<string, unknown> }>(path.join(runs, 'fin', 'split.json'));
  // The fixture generator draws picture i of the k-th folder the same in both datasets, so B's
  // 6 training images repeat A's training images; B's test images repeat only A's test images.
  assert.equal(split.source_overlap.test_in_source_train, 0);
  assert.equal(split.source_overlap.train_in_source_train, 6);
  assert.match(fin.stderr, /overlap with the source run's training set \(by content hash\): 0 of 4 test and 6 of 6 training images/);
});
