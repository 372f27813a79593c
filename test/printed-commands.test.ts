import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { CLI, cli, QUICKSTART, readJson, slow, tmpDir } from './helpers';
import { shellQuote } from '../src/util/shell';

/**
 * Every command granular prints for a user to run (`sweep --dry-run`, the
 * scripts of `--emit shell|slurm`, a run's `next:` lines) runs as printed
 * under npx (README's way), from another folder, in a shell whose PATH has no
 * `granular`: the way a pasted line, a cron job or a compute node runs it.
 */

/** The folders of sh, grep, dirname: a PATH with no granular on it. */
const BARE_PATH = '/usr/bin:/bin';
for (const d of BARE_PATH.split(':')) assert.ok(!fs.existsSync(path.join(d, 'granular')), `${d}/granular exists: these tests need a PATH without it`);

/** What granular prints to start itself when it is not installed: this node, this checkout's bin, absolute. */
const ABSOLUTE = `${shellQuote(process.execPath)} ${shellQuote(CLI)}`;

/** A PATH as npx makes it: its temporary package folder first (a granular linked to this checkout), then the rest. */
function npxPath(): string {
  const bin = path.join(tmpDir('granular-npx-'), '_npx', '3f2a9c', 'node_modules', '.bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.symlinkSync(CLI, path.join(bin, 'granular'));
  return `${bin}:${BARE_PATH}`;
}

/** Environment of a plain shell: PATH without granular, no GRANULAR variable. */
function bareEnv(pathVar = BARE_PATH): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: pathVar };
  delete env.GRANULAR;
  return env;
}

const TINY_SET = { 'data.synthetic.train_samples': 240, 'data.synthetic.test_samples': 120, 'train.epochs': 1 };

/** A sweep of one pretraining run and one fine-tuning run from it, in its own folder. */
function oneByOne(name: string): { dir: string; file: string } {
  const dir = tmpDir('granular-printed-');
  const doc = {
    name,
    base: QUICKSTART,
    stages: { pretrain: { set: TINY_SET }, finetune: { from: 'pretrain', set: { 'train.level': 'top', 'train.epochs': 1 } } },
  };
  fs.writeFileSync(path.join(dir, 'sweep.yaml'), YAML.stringify(doc));
  return { dir, file: 'sweep.yaml' };
}

function sh(script: string, args: string[], cwd: string, input?: string) {
  return spawnSync('sh', [...(script ? [script] : []), ...args], { cwd, env: bareEnv(), input, encoding: 'utf8', timeout: 180_000 });
}

test('under npx, sweep --dry-run prints commands that a shell without granular on PATH runs as printed', () => {
  const { dir, file } = oneByOne('dry');
  const r = cli(['sweep', file, '--dry-run'], { cwd: dir, env: bareEnv(npxPath()) as Record<string, string> });
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 2);
  for (const l of lines) assert.ok(l.startsWith(`${ABSOLUTE} `), `not the absolute command: ${l}`);
  const run = sh('', [], dir, r.stdout);
  assert.equal(run.status, 0, run.stdout + run.stderr);
  assert.equal(readJson(path.join(dir, 'runs', 'dry', 'finetune', 'summary.json')).status, 'completed');
});

test('under npx, the script of --emit shell runs with sh from another folder, no granular on PATH', () => {
  const { dir, file } = oneByOne('emit');
  const r = cli(['sweep', file, '--emit', 'shell'], { cwd: dir, env: bareEnv(npxPath()) as Record<string, string> });
  assert.equal(r.code, 0, r.stderr);
  const script = path.join(dir, 'runs', 'emit', 'sweep.sh');
  assert.match(fs.readFileSync(script, 'utf8'), /^GRANULAR=\$\{GRANULAR:-.*bin\/granular\.js.*\}$/m);
  const elsewhere = tmpDir('granular-elsewhere-');
  const run = sh(script, [], elsewhere);
  assert.equal(run.status, 0, run.stdout + run.stderr);
  assert.equal(readJson(path.join(dir, 'runs', 'emit', 'finetune', 'summary.json')).status, 'completed');
  assert.deepEqual(fs.readdirSync(elsewhere), [], 'nothing lands in the folder the script was started from');
});

test("under npx, a pretraining run's next: lines run as printed from another folder", () => {
  const dir = tmpDir('granular-next-');
  const r = cli(['pretrain', '--config', QUICKSTART, '--set', 'data.synthetic.train_samples=240', '--set', 'data.synthetic.test_samples=120', '--set', 'train.epochs=1', '--run-dir', 'runs/pre'], {
    cwd: dir,
    env: bareEnv(npxPath()) as Record<string, string>,
  });
  assert.equal(r.code, 0, r.stderr);
  const next = r.stderr.slice(r.stderr.indexOf('next:')).split('\n');
  const ft = next.find((l) => l.includes(' finetune --from '))!.trim();
  const ev = next.find((l) => l.includes(' eval '))!.trim();
  assert.equal(ev, `${ABSOLUTE} eval ${shellQuote(path.join(dir, 'runs', 'pre'))}`);
  const elsewhere = tmpDir('granular-elsewhere-');
  const e = sh('', ['-c', ev], elsewhere);
  assert.equal(e.status, 0, e.stdout + e.stderr);
  assert.equal(fs.readdirSync(path.join(dir, 'runs', 'pre', 'eval')).length, 1);
  const f = sh('', ['-c', `${ft} --set train.epochs=1 --run-dir ft`], elsewhere);
  assert.equal(f.status, 0, f.stdout + f.stderr);
  assert.equal(readJson(path.join(elsewhere, 'ft', 'summary.json')).status, 'completed');
});

test('granular printed as `granular` only when that is this checkout, installed in a lasting folder', () => {
  const { dir, file } = oneByOne('which');
  const first = (pathVar: string) => cli(['sweep', file, '--dry-run'], { cwd: dir, env: bareEnv(pathVar) as Record<string, string> }).stdout.split('\n')[0];
  // npm link / a global install: a lasting bin folder whose granular resolves to this checkout.
  const linked = path.join(tmpDir('granular-global-'), 'bin');
  fs.mkdirSync(linked);
  fs.symlinkSync(CLI, path.join(linked, 'granular'));
  assert.match(first(`${linked}:${BARE_PATH}`), /^granular pretrain /);
  // Another granular (another package or version) is not this one.
  const other = path.join(tmpDir('granular-other-'), 'bin');
  fs.mkdirSync(other);
  fs.writeFileSync(path.join(other, 'granular'), '#!/bin/sh\necho other\n', { mode: 0o755 });
  assert.ok(first(`${other}:${BARE_PATH}`).startsWith(`${ABSOLUTE} pretrain `));
  // A project's node_modules/.bin (on PATH only inside npm run / npm exec) does not count either.
  const local = path.join(tmpDir('granular-local-'), 'node_modules', '.bin');
  fs.mkdirSync(local, { recursive: true });
  fs.symlinkSync(CLI, path.join(local, 'granular'));
  assert.ok(first(`${local}:${BARE_PATH}`).startsWith(`${ABSOLUTE} pretrain `));
  // $GRANULAR still chooses.
  const env = { ...bareEnv(), GRANULAR: 'my-granular' } as Record<string, string>;
  assert.match(cli(['sweep', file, '--dry-run'], { cwd: dir, env }).stdout, /^my-granular pretrain /);
});

/**
 * A stand-in for Slurm's sbatch, as a compute node runs the job: each array
 * task runs the script in --chdir with the exported variables, PATH without
 * granular; it prints a job id as --parsable does.
 */
const FAKE_SBATCH = `#!/bin/sh
array= chdir= export_= script=
for a in "$@"; do
  case "$a" in
    --array=*) array=\${a#--array=} ;;
    --chdir=*) chdir=\${a#--chdir=} ;;
    --export=ALL,*) export_=\${a#--export=ALL,} ;;
    --*) ;;
    *) script=$a ;;
  esac
done
i=\${array%-*}; last=\${array#*-}
while [ "$i" -le "$last" ]; do
  (cd "$chdir" && env PATH=/usr/bin:/bin "$export_" SLURM_ARRAY_TASK_ID=$i sh "$script") >&2 || exit 1
  i=$((i + 1))
done
echo 4242
`;

test('under npx, the --emit slurm script submits job arrays whose tasks run on a node without granular on PATH', slow, () => {
  const { dir, file } = oneByOne('slurm');
  const r = cli(['sweep', file, '--emit', 'slurm'], { cwd: dir, env: bareEnv(npxPath()) as Record<string, string> });
  assert.equal(r.code, 0, r.stderr);
  const fake = tmpDir('granular-sbatch-');
  fs.writeFileSync(path.join(fake, 'sbatch'), FAKE_SBATCH, { mode: 0o755 });
  const run = spawnSync('sh', [path.join(dir, 'runs', 'slurm', 'sweep.slurm')], { cwd: tmpDir(), env: bareEnv(`${fake}:${BARE_PATH}`), encoding: 'utf8', timeout: 180_000 });
  assert.equal(run.status, 0, run.stdout + run.stderr);
  assert.match(run.stdout, /stage finetune: 1 runs, array job 4242/);
  assert.equal(readJson(path.join(dir, 'runs', 'slurm', 'finetune', 'summary.json')).status, 'completed');
});
