import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { multirunDoc, refuseCommaListsWithoutMultirun, splitCommaList } from '../src/sweep/multirun';
import { UsageError } from '../src/util/errors';
import { cli, QUICKSTART, readJson, slow, tmpDir, TINY } from './helpers';

const base = ['--config', QUICKSTART, ...TINY];
/** The run folders a --dry-run listing names, in order. */
const runDirs = (stdout: string) => stdout.trim().split('\n').filter(Boolean).map((l) => l.match(/--run-dir (\S+)/)?.[1] ?? l.match(/--resume (\S+)/)?.[1]);

test('comma lists split at top level only (Hydra): brackets, quotes and \\, keep a value whole', () => {
  assert.deepEqual(splitCommaList('0,1,2', 'x'), ['0', '1', '2']);
  assert.equal(splitCommaList('[a,b]', 'x'), null);
  assert.equal(splitCommaList("'a,b'", 'x'), null);
  assert.equal(splitCommaList('a\\,b', 'x'), null);
  assert.deepEqual(splitCommaList('[a,b],[c]', 'x'), ['[a,b]', '[c]']);
  assert.throws(() => splitCommaList('0,,1', "--set 'seed=0,,1'"), (e: unknown) => e instanceof UsageError && /value 2 of the comma list is empty/.test((e as Error).message));
  // The sweep document: comma lists are the grid, other items set:, a key given twice is the later item.
  assert.deepEqual(multirunDoc({ command: 'finetune', sets: ['seed=0,1', 'train.epochs=3', 'train.epochs=4', 'eval.ood_synthetic=[a,b]'], freeze: '0,all', from: 'runs/pre', name: 'n' }), {
    name: 'n',
    stages: { finetune: { command: 'finetune', grid: { seed: [0, 1], 'finetune.freeze': [0, 'all'] }, set: { 'train.epochs': 4, 'eval.ood_synthetic': ['a', 'b'] }, from_run: 'runs/pre' } },
  });
  // Without -m a comma value stays a value, unless the key is a number.
  assert.doesNotThrow(() => refuseCommaListsWithoutMultirun(['data.root=a,b', 'eval.ood_synthetic=[a,b]', 'seed=3'], undefined));
  assert.throws(() => refuseCommaListsWithoutMultirun(['train.lr=0.1,0.3'], undefined), /train\.lr is a number .* needs -m \(--multirun\)/);
});

test('-m: the cross product as a sweep (--dry-run, plan check); without -m a numeric comma list is refused; -m flags need -m', () => {
  const cwd = tmpDir();
  const r = cli(['pretrain', '-m', ...base, '--set', 'seed=0,1', '--level', 'leaf,top', '--dry-run'], { cwd });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(runDirs(r.stdout), [
    'runs/pretrain-multirun/pretrain-seed=0,level=leaf',
    'runs/pretrain-multirun/pretrain-seed=0,level=top',
    'runs/pretrain-multirun/pretrain-seed=1,level=leaf',
    'runs/pretrain-multirun/pretrain-seed=1,level=top',
  ]);
  assert.match(r.stdout.split('\n')[0], / pretrain --config \S+quickstart\.yaml .*--set seed=0 --set train\.level=leaf --run-dir /);
  assert.match(r.stderr, /sweep pretrain-multirun: 4 to run/);
  assert.equal(fs.existsSync(path.join(cwd, 'runs')), false, '--dry-run writes nothing');

  // Every run is checked before anything runs, as in a sweep file: a bad value exits 2 naming the run.
  const bad = cli(['pretrain', '-m', ...base, '--set', 'train.level=leaf,nosuch', '--sweep-name', 'bad'], { cwd });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /the command line, run 'pretrain-level=nosuch' \(stage pretrain\): unknown level 'nosuch'/);
  assert.match(bad.stderr, /Nothing was run/);
  assert.equal(fs.existsSync(path.join(cwd, 'runs', 'bad')), false);

  const noM = cli(['pretrain', ...base, '--set', 'seed=0,1,2'], { cwd });
  assert.equal(noM.code, 2);
  assert.match(noM.stderr, /--set 'seed=0,1,2': seed is a number .* needs -m \(--multirun\)/);
  const jobs = cli(['pretrain', ...base, '--jobs', '2', '--dry-run'], { cwd });
  assert.equal(jobs.code, 2);
  assert.match(jobs.stderr, /--jobs, --dry-run belong to a multirun: add -m/);
  const one = cli(['pretrain', '-m', ...base, '--set', 'seed=0,1', '--run-dir', 'x'], { cwd });
  assert.equal(one.code, 2);
  assert.match(one.stderr, /--run-dir is for one run/);
  assert.equal(fs.existsSync(path.join(cwd, 'runs')), false);

  // --emit writes the sweep's script, as granular sweep --emit does.
  const emit = cli(['pretrain', '-m', ...base, '--set', 'seed=0,1', '--emit', 'shell'], { cwd });
  assert.equal(emit.code, 0, emit.stderr);
  const script = fs.readFileSync(path.join(cwd, 'runs', 'pretrain-multirun', 'sweep.sh'), 'utf8');
  assert.match(script, /run_one pretrain runs\/pretrain-multirun\/pretrain-seed=1 pretrain --config /);
  assert.deepEqual(readJson(path.join(cwd, 'runs', 'pretrain-multirun', 'sweep.json')).command_line, ['granular', 'pretrain', '-m', ...base, '--set', 'seed=0,1', '--emit', 'shell']);
});

// Slow (two real training runs and five more commands, ~30 s on 2 busy cores); CI runs it (GRANULAR_SLOW=1).
test('-m runs the sweep; the same command again skips completed runs and resumes a crashed one; an edit is refused naming the setting; finetune -m --from', slow, () => {
  const cwd = tmpDir();
  const cmd = ['pretrain', '-m', ...base, '--level', 'top', '--set', 'seed=0,1', '--quiet'];
  const r = cli(cmd, { cwd });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /sweep pretrain-multirun: 2 completed, 0 failed, 0 skipped/);
  const runs = path.join(cwd, 'runs', 'pretrain-multirun');
  assert.equal(readJson(path.join(runs, 'pretrain-seed=1', 'summary.json')).status, 'completed');
  assert.match(fs.readFileSync(path.join(runs, 'pretrain-seed=1', 'config.yaml'), 'utf8'), /^seed: 1$/m);

  // A crashed run (config.yaml, no summary.json) is resumed in place, a completed one skipped.
  fs.rmSync(path.join(runs, 'pretrain-seed=1', 'summary.json'));
  const again = cli([...cmd, '--dry-run'], { cwd });
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(runDirs(again.stdout), ['runs/pretrain-multirun/pretrain-seed=1']);
  assert.match(again.stdout, / pretrain --resume runs\/pretrain-multirun\/pretrain-seed=1 --quiet/);
  assert.match(again.stderr, /1 to run, 1 left alone \(1 completed\)/);

  // The same sweep edited: refused, naming what changed.
  const edited = cli(['pretrain', '-m', ...base, '--level', 'top', '--set', 'seed=0,1', '--set', 'train.epochs=3', '--dry-run'], { cwd });
  assert.equal(edited.code, 2, edited.stderr);
  assert.match(edited.stderr, /run folder 'runs\/pretrain-multirun\/pretrain-seed=0' was started with other settings than this sweep asks for: train\.epochs is 2 in the run folder, 3 on the command line/);
  assert.match(edited.stderr, /give this multirun another --sweep-name/);

  // finetune -m --from DIR: every run fine-tunes from that run (its config is the base), checked first.
  const ft = cli(['finetune', '-m', '--from', 'runs/pretrain-multirun/pretrain-seed=0', '--freeze', '0,all', '--set', 'train.epochs=1', '--dry-run'], { cwd });
  assert.equal(ft.code, 0, ft.stderr);
  assert.deepEqual(runDirs(ft.stdout), ['runs/finetune-multirun/finetune-freeze=0', 'runs/finetune-multirun/finetune-freeze=all']);
  assert.match(ft.stdout, / finetune --from runs\/pretrain-multirun\/pretrain-seed=0 --set train\.epochs=1 --set finetune\.freeze=all --run-dir /);
  const notDone = cli(['finetune', '-m', '--from', 'runs/pretrain-multirun/pretrain-seed=1', '--freeze', '0,all', '--dry-run'], { cwd });
  assert.equal(notDone.code, 2);
  assert.match(notDone.stderr, /--from 'runs\/pretrain-multirun\/pretrain-seed=1' is not a finished run/);
});
