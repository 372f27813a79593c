import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, readJson, tmpDir } from './helpers';
import { LEAVES, TAXONOMY, writeFolderDataset } from './data-fixtures';

test('eval.ood_root: an external folder holding the test images scores exactly the test accuracy; bad folders exit 2', async () => {
  const root = tmpDir();
  const data = path.join(root, 'data');
  await writeFolderDataset(data, { taxonomy: TAXONOMY, leaves: LEAVES, kind: 'png' });
  const run = path.join(root, 'run');
  const sets = ['--set', 'data.format=imagefolder', '--set', `data.root=${data}`, '--set', 'data.image_size=12', '--set', 'data.val_fraction=0', '--set', 'model.arch=cnn-small', '--set', 'model.width=0.25', '--set', 'train.epochs=3', '--set', 'train.lr=0.01', '--set', `data.cache_dir=${path.join(root, 'cache')}`];
  let r = cli(['pretrain', ...sets, '--level', 'leaf', '--quiet', '--run-dir', run]);
  assert.equal(r.code, 0, r.stderr);
  const ood = path.join(root, 'ood');
  fs.cpSync(path.join(data, 'test'), ood, { recursive: true });
  r = cli(['eval', run, '--set', `eval.ood_root=${ood}`]);
  assert.equal(r.code, 0, r.stderr);
  const [stamp] = fs.readdirSync(path.join(run, 'eval'));
  const e = readJson(path.join(run, 'eval', stamp, 'summary.json'));
  assert.equal(e['ood_acc@external'], readJson(path.join(run, 'summary.json')).test_acc);
  fs.mkdirSync(path.join(ood, 'zz-not-a-class'));
  r = cli(['eval', run, '--set', `eval.ood_root=${ood}`]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /eval\.ood_root .* 1 folder\(s\) name no single class of the dataset \(zz-not-a-class\)/);
});
