import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { CLI, cli, QUICKSTART, readJson, tmpDir } from './helpers';

/** A sweep folder with its own sweep file, so runs land in <dir>/runs/<name>/. */
function sweepDir(doc: Record<string, unknown>, file = 'sweep.yaml'): { dir: string; file: string } {
  const dir = tmpDir('granular-sweep-');
  fs.writeFileSync(path.join(dir, file), YAML.stringify(doc));
  return { dir, file };
}

const TINY_SET = { 'data.synthetic.train_samples': 240, 'data.synthetic.test_samples': 120, 'train.epochs': 2 };

/** 2 pretraining runs (seeds) x 2 fine-tuning runs (freeze) each. */
const SMALL = {
  name: 'small',
  base: QUICKSTART,
  stages: {
    pretrain: { grid: { seed: [0, 1] }, set: TINY_SET },
    finetune: { from: 'pretrain', grid: { 'finetune.freeze': [0, 'all'] }, set: { 'train.level': 'top', 'train.epochs': 1 } },
  },
};

test('sweep: a bad grid key exits 2 naming the entry and suggesting the key', () => {
  const { dir, file } = sweepDir({ name: 'bad', stages: { pretrain: { grid: { 'train.epoch': [1, 2] } } } });
  const r = cli(['sweep', file], { cwd: dir });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /stages\.pretrain\.grid: unknown config key 'train\.epoch'.*Did you mean 'train\.epochs'/);
  assert.equal(fs.existsSync(path.join(dir, 'runs')), false);
});

test('sweep: empty grid, unknown from stage, missing base, bad value, bad --emit exit 2', () => {
  const cases: Array<[Record<string, unknown>, string[], RegExp]> = [
    [{ name: 'e', stages: { pretrain: { grid: { seed: [] } } } }, [], /grid\.seed is an empty list/],
    [{ name: 'e', stages: { pretrain: {}, finetune: { from: 'pre' } } }, [], /stages\.finetune\.from: there is no stage 'pre'/],
    [{ name: 'e', base: 'nope.yaml', stages: { pretrain: {} } }, [], /base: 'nope\.yaml' does not exist/],
    [{ name: 'e', stages: { pretrain: { grid: { 'train.epochs': ['many'] } } } }, [], /run 'pretrain-epochs=many'.*train\.epochs/s],
    [{ name: 'e', stages: { pretrain: {} } }, ['--emit', 'pbs'], /--emit 'pbs' must be shell or slurm/],
    [{ name: 'e', stages: { pretrain: {} } }, ['--jobs', '0'], /--jobs '0' must be a positive integer/],
  ];
  for (const [doc, extra, re] of cases) {
    const { dir, file } = sweepDir(doc);
    const r = cli(['sweep', file, ...extra], { cwd: dir });
    assert.equal(r.code, 2, `${JSON.stringify(doc)}: ${r.stderr}`);
    assert.match(r.stderr, re);
  }
  const r = cli(['sweep', 'missing.yaml'], { cwd: tmpDir() });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /cannot read sweep file 'missing\.yaml'/);
});

test('sweep --dry-run prints one command per run in dependency order and writes nothing', () => {
  const { dir, file } = sweepDir({ ...SMALL, stages: { ...SMALL.stages, finetune: { ...SMALL.stages.finetune, scratch: true } } });
  // $GRANULAR names the command (test/printed-commands.test.ts checks the default).
  const r = cli(['sweep', file, '--dry-run'], { cwd: dir, env: { GRANULAR: 'granular' } });
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 2 + 4 + 4);
  assert.ok(lines.every((l) => l.startsWith('granular ')));
  assert.match(lines[0], /^granular pretrain --config \S+quickstart\.yaml --set data\.synthetic\.train_samples=240 .*--set seed=0 --run-dir runs\/small\/pretrain-seed=0 --quiet$/);
  assert.equal(lines[2], 'granular finetune --from runs/small/pretrain-seed=0 --set train.level=top --set train.epochs=1 --set finetune.freeze=0 --run-dir runs/small/finetune-seed=0-freeze=0 --quiet');
  assert.match(lines[6], /^granular finetune --config \S+ .*--set train\.epochs=1 --set seed=0 --set train\.level=top --set finetune\.freeze=0 --run-dir runs\/small\/finetune-scratch-seed=0-freeze=0 --quiet$/);
  assert.equal(fs.existsSync(path.join(dir, 'runs')), false, 'a dry run writes nothing');
  // --stage narrows it (for xargs -P one stage at a time).
  const pre = cli(['sweep', file, '--dry-run', '--stage', 'pretrain'], { cwd: dir });
  assert.equal(pre.stdout.trim().split('\n').length, 2);
  assert.equal(cli(['sweep', file, '--dry-run', '--stage', 'nope'], { cwd: dir }).code, 2);
});

test('sweep --emit slurm writes a job-array script with the afterok dependency, runs referenced relatively', () => {
  const { dir, file } = sweepDir(SMALL);
  const r = cli(['sweep', file, '--emit', 'slurm'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const script = fs.readFileSync(path.join(dir, 'runs', 'small', 'sweep.slurm'), 'utf8');
  assert.match(script, /^PRE_JOB=\$\(sbatch --parsable \$SBATCH_ARGS --array=0-1 /m);
  assert.match(script, /^FT_JOB=\$\(sbatch --parsable \$SBATCH_ARGS --array=0-3 --dependency=afterok:\$PRE_JOB /m);
  assert.match(script, /run_one finetune runs\/small\/finetune-seed=1-freeze=all finetune --from runs\/small\/pretrain-seed=1 /);
  assert.ok(!script.includes(dir), 'no absolute path of the tree in the script');
  assert.equal(readJson(path.join(dir, 'runs', 'small', 'sweep.json')).name, 'small');
  assert.ok(fs.statSync(path.join(dir, 'runs', 'small', 'sweep.slurm')).mode & 0o100);
  assert.equal(spawnSync('bash', ['-n', path.join(dir, 'runs', 'small', 'sweep.slurm')]).status, 0, 'bash can parse it');
});

test('sweep --emit shell writes a script that runs the sweep, skips finished runs, and works after the tree moved', () => {
  const { dir, file } = sweepDir({
    name: 'sh',
    base: QUICKSTART,
    stages: { pretrain: { set: { ...TINY_SET, 'data.synthetic.strength': [1, 0.5] } }, finetune: { from: 'pretrain', set: { 'train.level': 'top', 'train.epochs': 1 } } },
  });
  const r = cli(['sweep', file, '--emit', 'shell'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  // Move the tree: the script finds its runs relative to itself.
  const moved = path.join(tmpDir(), 'moved');
  fs.renameSync(dir, moved);
  const script = path.join(moved, 'runs', 'sh', 'sweep.sh');
  const env = { ...process.env, GRANULAR: `${process.execPath} ${CLI}` };
  // The base config is an absolute path here; runs and --from are relative to the moved tree.
  const run = spawnSync('bash', [script], { env, encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, run.stdout + run.stderr);
  assert.equal(readJson(path.join(moved, 'runs', 'sh', 'finetune', 'summary.json')).status, 'completed');
  assert.equal(readJson(path.join(moved, 'runs', 'sh', 'finetune', 'run.json')).from, '../pretrain');
  const again = spawnSync('bash', [script], { env, encoding: 'utf8', timeout: 120_000 });
  assert.equal(again.status, 0);
  assert.match(again.stdout, /skip runs\/sh\/pretrain \(completed\)\nskip runs\/sh\/finetune \(completed\)/);
});

test('sweep refuses a run folder that belongs to another sweep', () => {
  const { dir, file } = sweepDir(SMALL);
  fs.mkdirSync(path.join(dir, 'runs', 'small'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'runs', 'small', 'sweep.json'), JSON.stringify({ name: 'other', sweep_file: 'x.yaml', runs: {} }));
  const r = cli(['sweep', file, '--dry-run'], { cwd: dir });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /run folder 'runs\/small' belongs to another sweep \('other'/);
  // A run folder started with other settings than this sweep's.
  fs.rmSync(path.join(dir, 'runs', 'small', 'sweep.json'));
  fs.mkdirSync(path.join(dir, 'runs', 'small', 'pretrain-seed=0'));
  fs.writeFileSync(path.join(dir, 'runs', 'small', 'pretrain-seed=0', 'config.yaml'), 'seed: 0\n');
  fs.writeFileSync(path.join(dir, 'runs', 'small', 'pretrain-seed=0', 'command.txt'), 'granular pretrain --set seed=0 --set train.epochs=9 --run-dir runs/small/pretrain-seed=0\n');
  const r2 = cli(['sweep', file], { cwd: dir });
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, /run folder 'runs\/small\/pretrain-seed=0' was started with other settings than this sweep asks for: data\.synthetic\.train_samples=240 only in the sweep file; .*train\.epochs is 9 in the run folder, 2 in the sweep file \(/);
});

test('sweep runs 2 pretraining x 2 fine-tuning runs, then skips, resumes and retries', () => {
  const { dir, file } = sweepDir(SMALL);
  const runs = path.join(dir, 'runs', 'small');
  const first = cli(['sweep', file, '--jobs', '2'], { cwd: dir });
  assert.equal(first.code, 0, first.stdout + first.stderr);
  assert.match(first.stdout, /sweep small: 6 completed, 0 failed, 0 skipped/);
  const names = ['pretrain-seed=0', 'pretrain-seed=1', 'finetune-seed=0-freeze=0', 'finetune-seed=0-freeze=all', 'finetune-seed=1-freeze=0', 'finetune-seed=1-freeze=all'];
  for (const n of names) assert.equal(readJson(path.join(runs, n, 'summary.json')).status, 'completed', n);

  // Config inheritance along from: the source's settings and seed, the stage's own on top.
  const ft = path.join(runs, 'finetune-seed=1-freeze=all');
  const cfg = YAML.parse(fs.readFileSync(path.join(ft, 'config.yaml'), 'utf8'));
  assert.equal(cfg.seed, 1);
  assert.equal(cfg.data.synthetic.train_samples, 240);
  assert.equal(cfg.train.level, 'top');
  assert.equal(cfg.train.epochs, 1);
  assert.equal(cfg.finetune.freeze, 'all');
  const meta = readJson(path.join(ft, 'run.json'));
  assert.equal(meta.from, '../pretrain-seed=1', 'from is stored relative');
  assert.equal(readJson(path.join(runs, 'sweep.json')).name, 'small');

  // Again: everything is skipped.
  const again = cli(['sweep', file, '--jobs', '2'], { cwd: dir });
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /sweep small: 0 completed, 0 failed, 6 skipped/);

  // A crashed run (no summary.json, no live lock) is resumed, the rest skipped.
  fs.rmSync(path.join(runs, 'finetune-seed=0-freeze=0', 'summary.json'));
  const dry = cli(['sweep', file, '--dry-run'], { cwd: dir, env: { GRANULAR: 'granular' } });
  // It continues on the threads it started with: cores / 2 under --jobs 2 (bit-identical resume needs the same count).
  const threads = Math.max(1, Math.floor((os.availableParallelism?.() ?? os.cpus().length) / 2));
  assert.equal(readJson(path.join(runs, 'finetune-seed=0-freeze=0', 'env.json')).threads, threads);
  assert.equal(dry.stdout.trim(), `granular finetune --resume runs/small/finetune-seed=0-freeze=0 --quiet --threads ${threads}`);
  const resumed = cli(['sweep', file], { cwd: dir });
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stdout, /1 completed, 0 failed, 5 skipped/);
  assert.match(resumed.stderr, /resume finetune-seed=0-freeze=0/);
  assert.match(fs.readFileSync(path.join(runs, 'logs', 'finetune-seed=0-freeze=0.log'), 'utf8'), /--resume/);
  assert.equal(readJson(path.join(runs, 'finetune-seed=0-freeze=0', 'summary.json')).status, 'completed');

  // A failed run is left alone (exit 1) unless --retry.
  const sFile = path.join(runs, 'finetune-seed=1-freeze=0', 'summary.json');
  fs.writeFileSync(sFile, JSON.stringify({ ...readJson(sFile), status: 'failed', error: 'made up' }));
  const noRetry = cli(['sweep', file], { cwd: dir });
  assert.equal(noRetry.code, 1);
  assert.match(noRetry.stdout, /0 completed, 0 failed, 6 skipped/);
  assert.match(noRetry.stdout, /1 of the skipped runs failed earlier.*--retry/);
  const retry = cli(['sweep', file, '--retry'], { cwd: dir });
  assert.equal(retry.code, 0, retry.stdout + retry.stderr);
  assert.match(retry.stdout, /1 completed, 0 failed, 5 skipped/);
  assert.equal(readJson(sFile).status, 'completed');
});

test('sweep: a failing run exits 1, is counted, and blocks the runs that start from it', () => {
  const { dir, file } = sweepDir({
    name: 'fails',
    base: QUICKSTART,
    stages: {
      pretrain: { runs: [{ 'train.lr': 0.5 }, { 'train.lr': 1e30 }], set: TINY_SET },
      finetune: { from: 'pretrain', set: { 'train.level': 'top', 'train.epochs': 1 } },
    },
  });
  const r = cli(['sweep', file], { cwd: dir });
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /sweep fails: 2 completed, 1 failed, 0 skipped, 1 blocked/);
  assert.match(r.stdout, /failed: pretrain-lr=1e\+30/);
  assert.match(r.stderr, /blocked finetune-lr=1e\+30: its source pretrain-lr=1e\+30 is failed/);
});

test('a sweep resumes a run it left interrupted, in place (--resume), not from the start', async () => {
  const { dir, file } = sweepDir({ name: 'intr', base: QUICKSTART, stages: { pretrain: { set: { ...TINY_SET, 'train.epochs': 6 } } } });
  const runDir = path.join(dir, 'runs', 'intr', 'pretrain');
  // SIGINT to the sweep once its run has checkpointed epoch 2: the sweep passes it on, the run stops resumably.
  const first = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, 'sweep', file], { cwd: dir, env: { ...process.env, GRANULAR_THREADS: '1' } });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const timer = setInterval(() => {
      try {
        if (JSON.parse(fs.readFileSync(path.join(runDir, 'checkpoint', 'state.json'), 'utf8')).epoch >= 2) {
          clearInterval(timer);
          child.kill('SIGINT');
        }
      } catch {
        // not written yet
      }
    }, 5);
    child.on('exit', (code) => {
      clearInterval(timer);
      resolve({ code, stdout });
    });
  });
  assert.equal(first.code, 130, first.stdout);
  const cut = readJson(path.join(runDir, 'summary.json'));
  assert.equal(cut.status, 'interrupted');
  const before = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8');
  const epochsBefore = before.split('\n').filter((l) => l.includes('"kind":"epoch"')).length;
  assert.ok(epochsBefore >= 3 && epochsBefore < 7, `${epochsBefore} epoch rows before the resume`);

  const dry = cli(['sweep', file, '--dry-run'], { cwd: dir, env: { GRANULAR: 'granular' } });
  assert.match(dry.stdout, /^granular pretrain --resume runs\/intr\/pretrain --quiet/m, 'an interrupted run is resumed, not skipped or restarted');
  const again = cli(['sweep', file], { cwd: dir, env: { GRANULAR_THREADS: '1' } });
  assert.equal(again.code, 0, again.stdout + again.stderr);
  assert.match(again.stdout, /sweep intr: 1 completed, 0 failed, 0 skipped/);
  assert.match(again.stderr, /resume pretrain/);
  assert.match(fs.readFileSync(path.join(dir, 'runs', 'intr', 'logs', 'pretrain.log'), 'utf8'), /--resume/);
  const s = readJson(path.join(runDir, 'summary.json'));
  assert.equal(s.status, 'completed');
  assert.equal(s.epochs_trained, 6);
  // In place: the rows written before the interruption are still the first rows, each epoch once.
  const after = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8');
  const epochs = after.split('\n').filter((l) => l.includes('"kind":"epoch"')).map((l) => JSON.parse(l).epoch);
  assert.deepEqual(epochs, Array.from({ length: 7 }, (_, i) => i));
  const keptRows = before.split('\n').filter((l) => l.includes('"kind":"epoch"')).slice(0, 3);
  for (const l of keptRows) assert.ok(after.includes(l), `row kept: ${l}`);
});
