import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { cli, QUICKSTART, tmpDir, TINY } from './helpers';
import { LEAVES, TAXONOMY, writeFolderDataset } from './data-fixtures';

/**
 * Data mistakes a new user makes get the error that names the mistake (issue
 * 23, item 3), exit 2 and nothing written; never the unrelated error a loader
 * meets later.
 */

test('data.root with data.format synthetic is refused, naming the format the folder looks like', async () => {
  const dir = tmpDir();
  await writeFolderDataset(path.join(dir, 'fm'), { taxonomy: TAXONOMY, leaves: { a1: [1, 1] } });
  for (const cmd of [['pretrain', '--run-dir', 'r'], ['hierarchy'], ['finetune', '--run-dir', 'r']]) {
    const r = cli([...cmd, '--config', QUICKSTART, '--set', 'data.root=fm'], { cwd: dir });
    assert.equal(r.code, 2, `${cmd[0]}: ${r.stderr}`);
    assert.match(r.stderr, /data\.root is '.*fm', but data\.format is synthetic.*data\.root is ignored by the synthetic format\. The folder looks like imagefolder data: add --set data\.format=imagefolder/);
    assert.doesNotMatch(r.stderr, /patch_size/);
    assert.equal(fs.existsSync(path.join(dir, 'r')), false, 'nothing written');
  }
  // A folder of another format, and one that does not exist.
  fs.mkdirSync(path.join(dir, 'inat'));
  fs.writeFileSync(path.join(dir, 'inat', 'train.json'), '{}');
  assert.match(cli(['hierarchy', '--set', 'data.root=inat'], { cwd: dir }).stderr, /looks like inat2021 data: add --set data\.format=inat2021/);
  const gone = cli(['hierarchy', '--set', 'data.root=fn'], { cwd: dir });
  assert.equal(gone.code, 2);
  assert.match(gone.stderr, /ignored by the synthetic format\. That folder does not exist either\. The nearest existing folder is '.*'; did you mean '.*fm'\?/);
});

test("a dataset folder that does not exist is named, with the nearest existing folder, not as a missing taxonomy.csv", async () => {
  const dir = tmpDir();
  await writeFolderDataset(path.join(dir, 'datasets', 'fashion-mnist-200'), { taxonomy: TAXONOMY, leaves: LEAVES });
  const r = cli(['hierarchy', '--set', 'data.format=imagefolder', '--set', 'data.root=datasets/fashon-mnist-200'], { cwd: dir });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /data\.root '.*datasets\/fashon-mnist-200' does not exist \(data\.format imagefolder\)\. The nearest existing folder is '.*datasets'; did you mean '.*datasets\/fashion-mnist-200'\?/);
  assert.doesNotMatch(r.stderr, /taxonomy/);
  // Deeper: the nearest existing ancestor, with what it holds when nothing is close.
  const deep = cli(['hierarchy', '--set', 'data.format=imagefolder', '--set', 'data.root=datasets/zzzzzzzzzz/x'], { cwd: dir });
  assert.match(deep.stderr, /The nearest existing folder is '.*datasets' \(it holds fashion-mnist-200\)/);
  // The right folder works.
  assert.equal(cli(['hierarchy', '--set', 'data.format=imagefolder', '--set', 'data.root=datasets/fashion-mnist-200'], { cwd: dir }).code, 0);
});

test('in a sweep file, a path in set:/grid: is relative to the sweep file, like base:', async () => {
  const dir = tmpDir();
  const study = path.join(dir, 'study');
  await writeFolderDataset(path.join(study, 'data', 'fm'), { taxonomy: TAXONOMY, leaves: LEAVES });
  fs.copyFileSync(QUICKSTART, path.join(study, 'base.yaml'));
  fs.writeFileSync(
    path.join(study, 'sweep.yaml'),
    YAML.stringify({
      name: 'paths',
      base: 'base.yaml',
      stages: { pretrain: { grid: { seed: [0] }, set: { 'data.format': 'imagefolder', 'data.root': 'data/fm', 'data.image_size': 16, 'model.arch': 'cnn-small', 'data.synthetic.patch_size': 4 } } },
    }),
  );
  // From the folder above: the sweep file's data/fm is study/data/fm, and the check finds it.
  const r = cli(['sweep', 'study/sweep.yaml', '--dry-run'], { cwd: dir, env: { GRANULAR: 'granular' } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /--set data\.root=study\/data\/fm /);
  assert.match(r.stdout, /--run-dir runs\/paths\/pretrain-seed=0 /, 'the run name keeps the value as written');
  // From elsewhere: absolute.
  const other = tmpDir();
  const r2 = cli(['sweep', path.join(study, 'sweep.yaml'), '--dry-run'], { cwd: other, env: { GRANULAR: 'granular' } });
  assert.equal(r2.code, 0, r2.stderr);
  assert.ok(r2.stdout.includes(`--set data.root=${path.join(study, 'data', 'fm')} `), r2.stdout);
});

test('did-you-mean for --level, --from and report --metric', () => {
  const dir = tmpDir();
  const lvl = cli(['pretrain', '--config', QUICKSTART, '--level', 'superclas', '--run-dir', 'r'], { cwd: dir });
  assert.equal(lvl.code, 2);
  assert.match(lvl.stderr, /unknown level 'superclas'\. Did you mean 'superclass'\? Valid levels:/);
  const pre = cli(['pretrain', '--config', QUICKSTART, ...TINY, '--set', 'train.epochs=1', '--run-dir', 'runs/pretrain-leaf', '--quiet'], { cwd: dir });
  assert.equal(pre.code, 0, pre.stderr);
  const from = cli(['finetune', '--from', 'runs/pretrain-lef', '--run-dir', 'ft'], { cwd: dir });
  assert.equal(from.code, 2);
  assert.match(from.stderr, /--from 'runs\/pretrain-lef' does not exist\. The nearest existing folder is '.*runs'; did you mean '.*runs\/pretrain-leaf'\?/);
  const metric = cli(['report', 'runs', '--metric', 'test_ac', '--out', 'rep'], { cwd: dir });
  assert.equal(metric.code, 2);
  assert.match(metric.stderr, /--metric 'test_ac' is in no run's summary\.json\. Did you mean 'test_acc'\?/);
});
