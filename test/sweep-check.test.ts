import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { planSweep } from '../src/sweep/plan';
import { CLI, cli, QUICKSTART, tmpDir } from './helpers';

/** Sweeps check every run before the first starts: a bad level, value or data folder exits 2 with nothing run. */

function sweepDir(doc: Record<string, unknown>): { dir: string; file: string } {
  const dir = tmpDir('granular-sweepcheck-');
  fs.writeFileSync(path.join(dir, 'sweep.yaml'), YAML.stringify(doc));
  return { dir, file: 'sweep.yaml' };
}

const TINY_SET = { 'data.synthetic.train_samples': 240, 'data.synthetic.test_samples': 120, 'train.epochs': 1 };

test('sweep: an unknown level in a grid fails --dry-run and the sweep itself before any run, naming the run and the valid levels', () => {
  const { dir, file } = sweepDir({
    name: 'lv',
    base: QUICKSTART,
    stages: {
      pretrain: { grid: { 'train.level': ['leaf', 'species'] }, set: TINY_SET },
      finetune: { from: 'pretrain', set: { 'train.level': 'top' } },
    },
  });
  for (const extra of [['--dry-run'], [], ['--emit', 'shell']]) {
    const r = cli(['sweep', file, ...extra], { cwd: dir });
    assert.equal(r.code, 2, `${extra}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /sweep file 'sweep\.yaml', run 'pretrain-level=species' \(stage pretrain\): unknown level 'species'\. Valid levels: leaf, top, coarse, superclass, basic, subclass/);
    assert.match(r.stderr, /Nothing was run\./);
    assert.doesNotMatch(r.stdout + r.stderr, /--retry/);
    assert.equal(r.stdout, '', 'no command printed');
    assert.equal(fs.existsSync(path.join(dir, 'runs')), false, 'nothing written, no run started');
  }
});

test('sweep: a fine-tuning stage is checked against its own data and level before its sources train', () => {
  const { dir, file } = sweepDir({
    name: 'ft',
    base: QUICKSTART,
    stages: {
      pretrain: { set: TINY_SET },
      finetune: { from: 'pretrain', set: { 'train.level': 'depth:7' } },
    },
  });
  const r = cli(['sweep', file], { cwd: dir });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /run 'finetune' \(stage finetune\): .*depth:7/);
  assert.equal(fs.existsSync(path.join(dir, 'runs')), false);
  // Data that is not there: the image folder is read (without decoding) before anything runs.
  const img = sweepDir({ name: 'img', stages: { pretrain: { set: { 'data.format': 'imagefolder', 'data.root': path.join(dir, 'no-such-data') } } } });
  const d = cli(['sweep', img.file, '--dry-run'], { cwd: img.dir });
  assert.equal(d.code, 2);
  assert.match(d.stderr, /run 'pretrain' \(stage pretrain\): .*no-such-data/);
  // A value that only fails in combination: eval.ood on synthetic data.
  const ood = sweepDir({ name: 'ood', base: QUICKSTART, stages: { pretrain: { grid: { 'eval.ood': [[], ['contrast']] } } } });
  const o = cli(['sweep', ood.file, '--dry-run'], { cwd: ood.dir });
  assert.equal(o.code, 2);
  assert.match(o.stderr, /run 'pretrain-ood=contrast' \(stage pretrain\): eval\.ood corrupts images/);
  // --freeze beyond the architecture's blocks.
  const fr = sweepDir({ name: 'fr', base: QUICKSTART, stages: { pretrain: {}, finetune: { from: 'pretrain', grid: { 'finetune.freeze': [1, 3] } } } });
  const f = cli(['sweep', fr.file, '--dry-run'], { cwd: fr.dir });
  assert.equal(f.code, 2);
  assert.match(f.stderr, /run 'finetune-freeze=3' \(stage finetune\): finetune\.freeze 3 is more than the 1 block\(s\) of two-layer-conv/);
});

test('sweep --dry-run passes on --threads and gives each of --jobs N runs cores/N threads; GRANULAR sets the prefix', () => {
  const { dir, file } = sweepDir({ name: 'th', base: QUICKSTART, stages: { pretrain: { grid: { seed: [0, 1] }, set: TINY_SET } } });
  const t1 = cli(['sweep', file, '--dry-run', '--threads', '1'], { cwd: dir });
  assert.equal(t1.code, 0, t1.stderr);
  const lines = t1.stdout.trim().split('\n');
  assert.equal(lines.length, 2);
  for (const l of lines) assert.match(l, /^\S+ \S+granular\.js pretrain .* --quiet --threads 1$/);
  const cores = os.availableParallelism?.() ?? os.cpus().length;
  const j2 = cli(['sweep', file, '--dry-run', '--jobs', '2'], { cwd: dir });
  assert.match(j2.stdout.trim().split('\n')[0], new RegExp(`--quiet --threads ${Math.max(1, Math.floor(cores / 2))}$`));
  const alone = cli(['sweep', file, '--dry-run'], { cwd: dir });
  assert.doesNotMatch(alone.stdout, /--threads/, 'one run at a time takes every core');
  const prefixed = cli(['sweep', file, '--dry-run'], { cwd: dir, env: { GRANULAR: 'npx granular' } });
  assert.match(prefixed.stdout.split('\n')[0], /^npx granular pretrain /);
  // Without it: the command that runs from any folder (test/printed-commands.test.ts runs it).
  const bare = cli(['sweep', file, '--dry-run'], { cwd: dir, env: { PATH: path.dirname(process.execPath), GRANULAR: '' } });
  assert.ok(bare.stdout.startsWith(`${process.execPath} ${CLI} pretrain `), bare.stdout);
});

test('a from-scratch baseline trains at the level its fine-tuned twin does: top unless the stage names one', () => {
  const plan = planSweep({
    name: 's',
    base: 'b.yaml',
    stages: { pretrain: { grid: { 'train.level': ['leaf', 'top'] } }, finetune: { from: 'pretrain', grid: { 'finetune.freeze': [0] }, scratch: true } },
  });
  const scratch = plan.runs.filter((r) => r.scratch);
  assert.equal(scratch.length, 1, 'one baseline shared by both sources');
  assert.ok(scratch[0].sets.includes('train.level=top'), scratch[0].sets.join(' '));
  assert.ok(!scratch[0].sets.includes('train.level=leaf'));
  const twin = plan.runs.find((r) => r.from && r.name.includes('level=leaf'))!;
  assert.ok(!twin.sets.some((x) => x.startsWith('train.level=')), 'the twin has no level: finetune trains at top');
  const named = planSweep({ name: 's', stages: { pretrain: {}, finetune: { from: 'pretrain', set: { 'train.level': 'depth:2' }, scratch: true } } });
  assert.deepEqual(named.runs.filter((r) => r.scratch)[0].sets.filter((x) => x.startsWith('train.level')), ['train.level=depth:2']);
});

test('sweep: a cluster:K stage is checked against the level its data.relabel_from run trains at, planned or missing', () => {
  const stages = (from: string) => ({
    coarse: { command: 'pretrain', set: { ...TINY_SET, 'train.level': 'superclass' } },
    cluster: { command: 'pretrain', set: { ...TINY_SET, 'data.relabel': 'cluster:3', 'data.relabel_from': from, 'train.level': 'cluster' } },
  });
  const ok = sweepDir({ name: 'cl', base: QUICKSTART, stages: stages('runs/cl/coarse') });
  const r = cli(['sweep', ok.file, '--dry-run'], { cwd: ok.dir });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /--run-dir runs\/cl\/cluster/);
  // The cluster level does not exist on the data itself: the check must come from the source's level.
  const leafOnly = sweepDir({ name: 'cl', base: QUICKSTART, stages: { cluster: stages('runs/cl/coarse').cluster } });
  const bad = cli(['sweep', leafOnly.file, '--dry-run'], { cwd: leafOnly.dir });
  assert.equal(bad.code, 2, bad.stdout);
  assert.match(bad.stderr, /run 'cluster' \(stage cluster\): data\.relabel_from 'runs\/cl\/coarse' is not a run folder, and no earlier run of this sweep writes it/);
});
