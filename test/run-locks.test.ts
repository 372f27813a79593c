import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, needsUnshare, QUICKSTART, runLockScript, tmpDir, TINY } from './helpers';

/**
 * A run's run.lock across PID namespaces (containers sharing a run folder):
 * liveness is the lock's heartbeat, never a PID (issue 22, item 6).
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
    assert.ok(fs.statSync(path.join(dir, 'run.lock')).isDirectory(), 'the holder still holds its lock');
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
  fs.rmSync(path.join(dir, 'run.lock'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'run.lock'));
  const sig = await new Promise<NodeJS.Signals | null>((r) => a.on('exit', (_c, s) => r(s)));
  assert.equal(sig, 'SIGKILL');
  assert.match(stderr, /lost .*run\.lock .* another process holds it now .*Stopping at once/);
  assert.ok(fs.statSync(path.join(dir, 'run.lock')).isDirectory(), "the new holder's lock is left alone");
});
