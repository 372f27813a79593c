import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFolderDataset, TAXONOMY, LEAVES } from './data-fixtures';
import { cli, QUICKSTART, tmpDir, TINY } from './helpers';

/** Messages that name the wrong thing send users the wrong way: each names what was given and what to do. */

const base = ['--config', QUICKSTART, ...TINY, '--quiet'];

test('eval on a folder that is not a run names RUN_DIR, not --from; a missing folder "does not exist"', () => {
  const r = cli(['eval', 'configs']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /RUN_DIR 'configs' is not a run folder \(no config\.yaml\)\. Give the folder of a completed 'granular pretrain' or 'granular finetune' run\./);
  assert.doesNotMatch(r.stderr, /--from/);
  const gone = cli(['eval', '/nonexistent/run']);
  assert.match(gone.stderr, /RUN_DIR '\/nonexistent\/run' does not exist/);
  const from = cli(['finetune', '--from', '/nonexistent/run', '--run-dir', path.join(tmpDir(), 'ft')]);
  assert.equal(from.code, 2);
  assert.match(from.stderr, /--from '\/nonexistent\/run' does not exist\./);
  assert.doesNotMatch(from.stderr, /not a run folder/);
  // An unknown key under eval points at the key list, not at another command's help.
  const key = cli(['eval', 'configs', '--set', 'eval.oods=[jpeg]']);
  assert.equal(key.code, 2);
  assert.match(key.stderr, /unknown config key 'eval\.oods'.*Did you mean 'eval\.ood'\?.*'granular config --keys'/);
  assert.doesNotMatch(key.stderr, /pretrain --help/);
});

test('a completed run folder given as --run-dir is refused without suggesting --resume (which would refuse it too)', () => {
  const dir = path.join(tmpDir(), 'run');
  assert.equal(cli(['pretrain', ...base, '--run-dir', dir]).code, 0);
  const r = cli(['pretrain', ...base, '--run-dir', dir]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /holds a completed run\. Choose another --run-dir; to build on that run, evaluate it \('granular eval .*'\) or fine-tune from it \('granular finetune --from .*'\)/);
  assert.doesNotMatch(r.stderr, /--resume/);
  // What the old message advised is indeed refused.
  const resume = cli(['pretrain', '--resume', dir]);
  assert.equal(resume.code, 2);
  assert.match(resume.stderr, /already completed/);
  // An unfinished run still gets --resume.
  fs.rmSync(path.join(dir, 'summary.json'));
  const crashed = cli(['pretrain', ...base, '--run-dir', dir]);
  assert.match(crashed.stderr, /holds an unfinished run\. Choose another --run-dir, or continue that run with --resume/);
});

test('eval.ood_synthetic on an image-folder run names the setting and the data format, not patch_size', async () => {
  const root = tmpDir();
  const data = path.join(root, 'data');
  await writeFolderDataset(data, { taxonomy: TAXONOMY, leaves: LEAVES });
  const run = path.join(root, 'run');
  const sets = ['--set', 'data.format=imagefolder', '--set', `data.root=${data}`, '--set', 'data.image_size=12', '--set', 'data.cache_dir=null', '--set', 'model.arch=cnn-small', '--set', 'train.epochs=1'];
  const pre = cli(['pretrain', ...sets, '--quiet', '--run-dir', run]);
  assert.equal(pre.code, 0, pre.stderr);
  const r = cli(['eval', run, '--set', 'eval.ood_synthetic=[more_noise]']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /eval\.ood_synthetic shifts the synthetic data generator; run '.*' uses data\.format 'imagefolder'\. For image data use eval\.ood .* or eval\.ood_root/);
  assert.doesNotMatch(r.stderr, /patch_size/);
  assert.equal(fs.existsSync(path.join(run, 'eval')), false, 'nothing written');
  // The same at the start of a run, where it used to say "not available in this version yet".
  const p2 = cli(['pretrain', ...sets, '--set', 'eval.ood_synthetic=[all_hard]', '--run-dir', path.join(root, 'run2')]);
  assert.equal(p2.code, 2);
  assert.match(p2.stderr, /eval\.ood_synthetic shifts the synthetic data generator; this run uses data\.format 'imagefolder'/);
  assert.doesNotMatch(p2.stderr, /not available in this version/);
});

test('a YAML error in a sweep file or a --set value ends with the offending text, not a colon', () => {
  const file = path.join(tmpDir(), 'sweep.yaml');
  fs.writeFileSync(file, 'name: s\nstages:\n  pretrain:\n    grid: {seed: [0, 1}\n');
  const r = cli(['sweep', file, '--dry-run']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /line 4, column \d+ is not valid YAML: .+\n {4} {4}grid: \{seed: \[0, 1\}\n\s*\^/);
  assert.doesNotMatch(r.stderr.split('\n')[0], /:$/);
  const s = cli(['config', '--set', 'eval.ood=[a, b']);
  assert.equal(s.code, 2);
  assert.match(s.stderr, /the value is not valid YAML: Flow sequence must end with a \] \(at character \d+ of the value\)\. Quote it to pass it as text: --set 'eval\.ood="\[a, b"'\./);
});
