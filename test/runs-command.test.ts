import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readRun } from '../src/report/runs';
import { cli, holdRunLock, needsPty, QUICKSTART, readJson, tmpDir, TINY, tty } from './helpers';

const base = ['--config', QUICKSTART, ...TINY, '--quiet'];

test('granular runs: one line per run folder with status, stage, level, classes, freeze, test_acc, age; --json', { ...needsPty }, async () => {
  const root = tmpDir();
  const runs = path.join(root, 'runs');
  const pre = path.join(runs, 'pre');
  assert.equal(cli(['pretrain', ...base, '--level', 'leaf', '--run-dir', pre]).code, 0);
  assert.equal(cli(['finetune', ...base, '--from', pre, '--level', 'top', '--freeze', 'all', '--run-dir', path.join(runs, 'probe')]).code, 0);
  assert.equal(cli(['pretrain', ...base, '--set', 'train.lr=1e30', '--set', 'train.schedule=constant', '--run-dir', path.join(runs, 'diverged')]).code, 1);
  // A crashed run: config.yaml, no summary.json, no live process.
  const crashed = path.join(runs, 'crashed');
  fs.cpSync(pre, crashed, { recursive: true });
  fs.rmSync(path.join(crashed, 'summary.json'));
  fs.writeFileSync(path.join(crashed, 'run.json'), JSON.stringify({ ...readJson(path.join(pre, 'run.json')), created: '2999-01-01T00:00:00Z' }));
  // A running one: a live process (this test) holds its lock.
  const live = path.join(runs, 'live');
  fs.cpSync(crashed, live, { recursive: true });
  const holder = await holdRunLock(live);
  try {
    listed(runs, root, pre);
  } finally {
    holder.kill('SIGKILL');
  }
});

function listed(runs: string, root: string, pre: string): void {
  const r = tty(['runs', runs]);
  assert.equal(r.code, 0, r.screen);
  const line = (name: string) => r.screen.split('\n').find((l) => l.startsWith(name + ' ')) ?? '';
  const s = readJson<{ test_acc: number }>(path.join(pre, 'summary.json'));
  assert.match(line('pre'), new RegExp(`^pre +completed +pretrain +leaf +24 +– +${s.test_acc.toFixed(4)} +\\d+ s$`));
  assert.match(line('probe'), /^probe +completed +finetune +superclass +2 +all +0\.\d{4} +\d+ s$/);
  assert.match(line('diverged'), /^diverged +failed +pretrain +leaf +24 +– +– +\d+ s$/);
  // No summary yet: level and classes from hierarchy.json, written before training.
  assert.match(line('crashed'), /^crashed +crashed +pretrain +leaf +24 +– +– +/);
  assert.match(line('live'), /^live +running +pretrain +leaf +24 /);
  assert.match(r.screen, /^5 runs: 2 completed, 1 failed, 1 crashed, 1 running$/m);
  // Oldest first: the crashed copy says it started in 2999, so it is listed last but for its copy.
  const order = r.screen.split('\n').filter((l) => /^(pre|probe|diverged|crashed|live) /.test(l)).map((l) => l.split(' ')[0]);
  assert.deepEqual(order.slice(0, 3), ['pre', 'probe', 'diverged']);

  const j = cli(['runs', runs, '--json']);
  assert.equal(j.code, 0, j.stderr);
  const list = JSON.parse(j.stdout) as Array<Record<string, unknown>>;
  const probe = list.find((x) => String(x.dir).endsWith('probe'))!;
  assert.equal(probe.status, 'completed');
  assert.equal(probe.level, 'superclass');
  assert.equal(probe.num_classes, 2);
  assert.equal(probe.freeze, 'all');
  assert.equal(typeof probe.test_acc, 'number');
  assert.equal(typeof probe.age_seconds, 'number');
  assert.deepEqual(list.map((x) => x.status).sort(), ['completed', 'completed', 'crashed', 'failed', 'running']);

  // No runs/ here yet: says so and exits 0; an explicit missing folder is a usage error.
  const none = cli(['runs'], { cwd: tmpDir() });
  assert.equal(none.code, 0);
  assert.match(none.stdout, /no runs yet/);
  assert.equal(cli(['runs', path.join(root, 'nope')]).code, 2);
}

test('doctor --json: the backend, threads, kernels and a working training step as one JSON object', () => {
  const r = cli(['doctor', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const d = JSON.parse(r.stdout);
  // auto: the native backend where the oneDNN addon is built, else wasm.
  assert.ok(['native', 'wasm'].includes(d.backend), d.backend);
  assert.equal(d.conv_training_step, 'ok');
  assert.ok(Number.isInteger(d.threads) && d.threads >= 1);
  assert.ok(['onednn', 'wasm'].includes(d.kernels));
  if (d.backend === 'native') assert.equal(d.kernels, 'onednn');
  assert.equal(typeof d.versions.granular, 'string');
});

test('summary keys are read in snake_case; an old camelCase key (dynamicsSeconds) stays readable under both names', () => {
  const dir = path.join(tmpDir(), 'old');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'config.yaml'), 'seed: 0\n');
  fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify({ status: 'completed', stage: 'pretrain', test_acc: 0.5, dynamicsSeconds: 1.5, 'test_acc@myGenus': 0.7 }));
  const s = readRun(dir).summary!;
  assert.equal(s.dynamics_seconds, 1.5);
  assert.equal(s.dynamicsSeconds, 1.5);
  assert.equal(s['test_acc@my_genus'], undefined, 'level names are not respelled');
  const r = cli(['report', dir, '--metric', 'dynamics_seconds', '--out', path.join(dir, '..', 'rep'), '--no-png']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /\| dynamics_seconds +\|\n.*\n.*\| 1\.5000 +\|/);
});
