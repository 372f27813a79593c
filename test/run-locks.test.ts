import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, needsUnshare, QUICKSTART, runLockScript, runWatching, tmpDir, TINY } from './helpers';

/**
 * A run's lock across PID namespaces (containers sharing a run folder):
 * liveness is the heartbeat of run.lock.d, never a PID (issue 22, item 6);
 * run.lock itself is the holder's PID, as the run-folder contract says
 * (DESIGN "Run directory"), and older layouts are still understood.
 */

const STALE_MS = 2000;
const env = { ...process.env, GRANULAR_LOCK_STALE_MS: String(STALE_MS), GRANULAR_THREADS: '1' };
const SWEEP_RUN = path.resolve(__dirname, '..', 'src', 'sweep', 'run.js');

/** Everything `p` prints, and a promise for the first line starting with `word`. */
function watch(p: ChildProcess): { out: () => string; line: (word: string) => Promise<string> } {
  let buf = '';
  const waiters: Array<() => void> = [];
  p.stdout!.on('data', (d) => {
    buf += d;
    for (const w of waiters) w();
  });
  return {
    out: () => buf,
    line: (word) =>
      new Promise((resolve, reject) => {
        const look = () => {
          const m = buf.match(new RegExp(`^${word} .*$`, 'm'));
          if (m) resolve(m[0]);
        };
        waiters.push(look);
        look();
        p.on('exit', () => setTimeout(() => reject(new Error(`exited before ${word}: ${buf}`)), 50));
      }),
  };
}

/** `node -e code` in a fresh PID namespace of its own (where it is PID 1 and few PIDs exist). */
function inNamespace(code: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, '-e', code], { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A holder of `dir`s run lock in a PID namespace of its own, at PID ~60 there: a PID no process has in a fresh namespace. --kill-child: killing unshare kills the namespace (its PID 1 and, with it, every process in it), so no holder outlives the test and keeps its output pipe open. */
function holderInNamespace(dir: string, ms: number): ChildProcess {
  return spawn('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', 'sh', '-c', `for i in $(seq 60); do /bin/true; done; ${process.execPath} ${runLockScript()} ${dir} ${ms} & wait`], { env });
}

/** A small completed run, made resumable again (no summary.json: it looks crashed). */
function crashedRun(): string {
  const dir = path.join(tmpDir(), 'run');
  const r = cli(['pretrain', '--config', QUICKSTART, ...TINY, '--quiet', '--run-dir', dir], { env: { GRANULAR_THREADS: '1' } });
  assert.equal(r.code, 0, r.stderr);
  fs.rmSync(path.join(dir, 'summary.json'));
  return dir;
}

test('run.lock across PID namespaces: a live run in another namespace is seen as live (refused, "running"), never taken over', needsUnshare, async () => {
  const dir = crashedRun();
  const a = holderInNamespace(dir, 600_000);
  const aw = watch(a);
  try {
    const held = await aw.line('HELD');
    const pid = Number(held.split(' pid ')[1]);
    assert.ok(pid >= 60, `the holder is PID ${pid} of its namespace`);
    // From a namespace of its own, where that PID is nobody: taking the lock is refused, naming the holder.
    const b = inNamespace(`const rd = require(${JSON.stringify(path.resolve(__dirname, '..', 'src', 'runs', 'rundir.js'))});
      try { rd.acquireLock(${JSON.stringify(dir)}); console.log('GOT'); } catch (e) { console.log('REFUSED ' + e.message); }`);
    assert.match(b.stdout, new RegExp(`^REFUSED run '.*' is in use by process ${pid} on host \\S+ .*\\(run\\.lock, its heartbeat is fresh\\)`, 'm'), b.stdout + b.stderr);
    // A sweep (or `granular runs`) in another namespace sees it running, across the stale time.
    await new Promise((r) => setTimeout(r, STALE_MS + 500));
    const state = inNamespace(`console.log(require(${JSON.stringify(SWEEP_RUN)}).runState(${JSON.stringify(dir)}))`);
    assert.equal(state.stdout.trim(), 'running', state.stderr);
    // --resume from this namespace: refused with exit 2, the run folder left alone.
    const r = cli(['pretrain', '--resume', dir, '--quiet'], { env: { GRANULAR_LOCK_STALE_MS: String(STALE_MS), GRANULAR_THREADS: '1' } });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`is in use by process ${pid} on host`));
    assert.equal(fs.existsSync(path.join(dir, 'summary.json')), false);
    assert.ok(fs.statSync(path.join(dir, 'run.lock.d')).isDirectory(), 'the holder still holds its lock');
    assert.equal(fs.readFileSync(path.join(dir, 'run.lock'), 'utf8'), `${pid}\n`, "run.lock is still the holder's PID (in its namespace)");
  } finally {
    a.kill('SIGKILL');
  }
});

test('run.lock: a run killed as PID 1 of its namespace leaves a lock taken over once its heartbeat is stale; --resume completes', needsUnshare, async () => {
  const dir = crashedRun();
  // node is PID 1 of the new namespace, as a run is in a container.
  const a = spawn('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', process.execPath, runLockScript(), dir], { env });
  const aw = watch(a);
  const held = await aw.line('HELD');
  assert.match(held, / pid 1$/);
  const child = Number(spawnSync('ps', ['-o', 'pid=', '--ppid', String(a.pid)]).stdout.toString().trim());
  assert.ok(child > 0);
  process.kill(child, 'SIGKILL'); // as `docker kill` does
  await new Promise<void>((r) => a.on('exit', () => r()));
  assert.ok(fs.existsSync(path.join(dir, 'run.lock')), 'a killed holder leaves its lock behind');
  // Until its heartbeat is stale it counts as running; then as crashed.
  const state = () => spawnSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(SWEEP_RUN)}).runState(${JSON.stringify(dir)}))`], { env, encoding: 'utf8' }).stdout.trim();
  assert.equal(state(), 'running');
  await new Promise((r) => setTimeout(r, STALE_MS + 300));
  assert.equal(state(), 'crashed');
  // PID 1 is alive in every namespace, so a PID never frees this lock; the heartbeat does.
  const t0 = Date.now();
  const r = cli(['pretrain', '--resume', dir, '--quiet'], { env: { GRANULAR_LOCK_STALE_MS: String(STALE_MS), GRANULAR_THREADS: '1' } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /taking over a stale run\.lock left by process 1 on host \S+/);
  assert.ok(Date.now() - t0 < 60_000);
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).status, 'completed');
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('run.lock')), [], 'the lock and its info are gone after the run');
});

test('run.lock: a holder freshly killed is waited for until stale, then taken over (same namespace, acquireLock)', async () => {
  const dir = tmpDir();
  const a = spawn(process.execPath, [runLockScript(), dir], { env });
  await watch(a).line('HELD');
  a.kill('SIGKILL');
  await new Promise<void>((r) => a.on('exit', () => r()));
  const t0 = Date.now();
  const b = spawn(process.execPath, [runLockScript(), dir, '0'], { env });
  const bw = watch(b);
  const note = await bw.line('NOTE');
  await bw.line('RELEASED');
  const waited = Date.now() - t0;
  assert.match(note, /taking over a stale run\.lock left by process \d+ on host/);
  assert.ok(waited < STALE_MS + 3000, `waited ${waited} ms`);
  assert.deepEqual(fs.readdirSync(dir), [], 'nothing left once released');
});

test('run.lock: a holder whose lock is taken from it (replaced by another process) stops at once', { timeout: 30_000 }, async () => {
  const dir = tmpDir();
  const a = spawn(process.execPath, [runLockScript(), dir], { env });
  await watch(a).line('HELD');
  let stderr = '';
  a.stderr!.on('data', (d) => (stderr += d));
  // Another process took it over (as after a stall past the stale time): a new lock folder with a fresh heartbeat.
  fs.rmdirSync(path.join(dir, 'run.lock.d'));
  fs.mkdirSync(path.join(dir, 'run.lock.d'));
  const sig = await new Promise<NodeJS.Signals | null>((r) => a.on('exit', (_c, s) => r(s)));
  assert.equal(sig, 'SIGKILL');
  assert.match(stderr, /lost .*run\.lock\.d .* another process holds it now .*Stopping at once/);
  assert.ok(fs.statSync(path.join(dir, 'run.lock.d')).isDirectory(), "the new holder's lock is left alone");
});

const sh = (cmd: string) => spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });

test('run.lock is the PID of the process running the run (cat, kill -0); a SIGKILLed run leaves it with a stale heartbeat that --resume takes over; gone after the run', async () => {
  const dir = path.join(tmpDir(), 'run');
  const lock = path.join(dir, 'run.lock');
  let pid = 0;
  let cat = '';
  let kill0: number | null = null;
  const r = await runWatching(['pretrain', '--config', QUICKSTART, '--quiet', '--set', 'train.epochs=12', '--set', 'data.synthetic.test_samples=200', '--run-dir', dir], (child) => {
    if (!fs.existsSync(path.join(dir, 'checkpoint', 'state.json'))) return false;
    pid = child.pid!;
    // What users' scripts do: `cat RUN/run.lock`, `kill -0 $(cat RUN/run.lock)`.
    cat = sh(`cat '${lock}'`).stdout;
    kill0 = sh(`kill -0 $(cat '${lock}')`).status;
    child.kill('SIGKILL');
    return true;
  }, { GRANULAR_LOCK_STALE_MS: String(STALE_MS), GRANULAR_THREADS: '1' });
  assert.equal(r.signal, 'SIGKILL', `the run was killed before it finished: ${r.stderr}`);
  assert.equal(cat, `${pid}\n`, 'run.lock holds the PID of the running process, then a newline');
  assert.equal(kill0, 0, 'kill -0 $(cat run.lock) succeeds while the run lives');
  // Killed: run.lock stays, naming a process that is gone; run.lock.d's heartbeat stops.
  assert.ok(fs.statSync(lock).isFile(), 'a killed run leaves run.lock behind');
  assert.equal(fs.readFileSync(lock, 'utf8'), `${pid}\n`);
  assert.notEqual(sh(`kill -0 $(cat '${lock}')`).status, 0);
  assert.ok(fs.statSync(path.join(dir, 'run.lock.d')).isDirectory());
  const state = () => spawnSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(SWEEP_RUN)}).runState(${JSON.stringify(dir)}))`], { env, encoding: 'utf8' }).stdout.trim();
  await new Promise((res) => setTimeout(res, STALE_MS + 300));
  assert.equal(state(), 'crashed', 'a stale heartbeat is a crashed run');
  const res = cli(['pretrain', '--resume', dir, '--quiet'], { env: { GRANULAR_LOCK_STALE_MS: String(STALE_MS), GRANULAR_THREADS: '1' } });
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stderr, new RegExp(`taking over a stale run\\.lock left by process ${pid} on host \\S+`));
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).status, 'completed');
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('run.lock')), [], 'run.lock, run.lock.d and run.lock.info are gone after the run');
});

/** Hold the lock of `dir` in a child (runLockScript); resolves with the child and its PID once held. */
async function holder(dir: string): Promise<{ p: ChildProcess; pid: number; out: () => string }> {
  const p = spawn(process.execPath, [runLockScript(), dir], { env });
  const w = watch(p);
  const held = await w.line('HELD');
  return { p, pid: Number(held.split(' pid ')[1]), out: w.out };
}

const take = (dir: string) => spawnSync(process.execPath, [runLockScript(), dir, '0'], { env, encoding: 'utf8', timeout: 60_000 }).stdout;
const stateOf = (dir: string) => spawnSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(SWEEP_RUN)}).runState(${JSON.stringify(dir)}))`], { env, encoding: 'utf8' }).stdout.trim();

test('run.lock of granular before #22 (a PID file, no heartbeat): judged by its PID here; refused while it lives, replaced once it is gone; such a run resumes', async () => {
  const dir = crashedRun();
  const sleeper = spawn('sleep', ['60']);
  try {
    fs.writeFileSync(path.join(dir, 'run.lock'), `${sleeper.pid}\n`);
    assert.equal(stateOf(dir), 'running');
    assert.match(take(dir), new RegExp(`^REFUSED run '.*' is in use by process ${sleeper.pid} \\(run\\.lock, with no heartbeat: written by an older granular\\)`, 'm'));
    assert.equal(fs.readFileSync(path.join(dir, 'run.lock'), 'utf8'), `${sleeper.pid}\n`, 'a refused process leaves the lock alone');
  } finally {
    sleeper.kill('SIGKILL');
  }
  await new Promise<void>((res) => (sleeper.exitCode !== null || sleeper.signalCode !== null ? res() : sleeper.on('exit', () => res())));
  assert.equal(stateOf(dir), 'crashed');
  const h = await holder(dir);
  try {
    assert.match(h.out(), new RegExp(`^NOTE replacing a run\\.lock left by process ${sleeper.pid} \\(older granular\\)`, 'm'));
    assert.equal(fs.readFileSync(path.join(dir, 'run.lock'), 'utf8'), `${h.pid}\n`, "run.lock is now the new holder's PID");
  } finally {
    h.p.kill('SIGKILL');
  }
  await new Promise<void>((res) => h.p.on('exit', () => res()));
  // The whole run: an older granular's crashed run (run.lock with a dead PID, nothing else) resumes.
  fs.rmSync(path.join(dir, 'run.lock.d'), { recursive: true });
  fs.rmSync(path.join(dir, 'run.lock.info'));
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('run.lock')), ['run.lock']);
  const r = cli(['pretrain', '--resume', dir, '--quiet'], { env: { GRANULAR_LOCK_STALE_MS: String(STALE_MS), GRANULAR_THREADS: '1' } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /replacing a run\.lock left by process \d+ \(older granular\)/);
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).status, 'completed');
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('run.lock')), []);
});

test('run.lock of granular between #22 and this layout (a heartbeat folder): judged by its mtime; refused while fresh, taken over once stale; such a run resumes', async () => {
  const dir = crashedRun();
  const old = path.join(dir, 'run.lock');
  fs.mkdirSync(old);
  fs.writeFileSync(path.join(dir, 'run.lock.info'), JSON.stringify({ host: 'elsewhere', pid: 1, started: '2025-01-01T00:00:00Z' }));
  // A live older holder refreshes the folder's mtime (its PID, 1, would look alive anyway: only the heartbeat counts);
  // from a process of its own, since the checks below block this one.
  const beat = spawn('sh', ['-c', `while :; do touch -m -c '${old}'; sleep 0.3; done`]);
  try {
    assert.equal(stateOf(dir), 'running');
    assert.match(take(dir), /^REFUSED run '.*' is in use by process 1 on host elsewhere .*\(run\.lock, its heartbeat is fresh\)/m);
    assert.ok(fs.statSync(old).isDirectory(), 'a refused process leaves the older lock alone');
  } finally {
    beat.kill('SIGKILL');
  }
  await new Promise((res) => setTimeout(res, STALE_MS + 300));
  assert.equal(stateOf(dir), 'crashed');
  const r = cli(['pretrain', '--resume', dir, '--quiet'], { env: { GRANULAR_LOCK_STALE_MS: String(STALE_MS), GRANULAR_THREADS: '1' } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /taking over a stale run\.lock folder \(older granular\) left by process 1 on host elsewhere/);
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')).status, 'completed');
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('run.lock')), [], 'the older lock, its info and ours are all gone after the run');
});
