import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { takeLock, takeOver } from '../src/util/heartbeat-lock';
import { needsUnshare, tmpDir } from './helpers';

// Separate PID namespaces need root (or user namespaces) and util-linux unshare; CI requires them (GRANULAR_REQUIRE_UNSHARE=1).

/** A process that takes the record cache lock `file`, prints HELD, holds it `ms`, (with `check`: prints LOST if it lost it meanwhile) releases it and prints RELEASED. */
function holderScript(): string {
  const file = path.join(tmpDir(), 'holder.js');
  const records = path.resolve(__dirname, '..', 'src', 'data', 'cache', 'records.js');
  fs.writeFileSync(
    file,
    `const { lockStore } = require(${JSON.stringify(records)});
(async () => {
  const l = await lockStore(process.argv[2], (m) => console.log('LOG ' + m));
  console.log('HELD ' + Date.now() + ' pid ' + process.pid);
  setTimeout(() => {
    if (process.argv[4] === 'check') try { l.check(); } catch (e) { console.log('LOST ' + e.message); }
    l.unlock();
    console.log('RELEASED ' + Date.now());
  }, Number(process.argv[3]));
})();
`,
  );
  return file;
}

/** Resolves with the time printed on the first `word` line of `p`'s stdout, and collects everything it prints. */
function when(p: ChildProcess, word: string, out: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    let buf = '';
    p.stdout!.on('data', (d) => {
      buf += d;
      out.push(String(d));
      const m = buf.match(new RegExp(`^${word} (\\d+)`, 'm'));
      if (m) resolve(Number(m[1]));
    });
    p.on('exit', () => setTimeout(() => reject(new Error(`exited before ${word}: ${buf}`)), 50));
  });
}

const env = { ...process.env, GRANULAR_LOCK_STALE_MS: '2000' };

test('record cache lock across PID namespaces: a live holder in another namespace is waited for, never taken over', needsUnshare, async () => {
  const script = holderScript();
  const lock = path.join(tmpDir(), 'store.lk');
  const out: string[] = [];
  // The holder gets PID ~60 of its namespace: a PID no process or thread has in the other one (node's threads take 2, 3, ...).
  const a = spawn('unshare', ['--pid', '--fork', '--mount-proc', 'sh', '-c', `for i in $(seq 60); do /bin/true; done; node ${script} ${lock} 4000 & wait`], { env });
  await when(a, 'HELD', out);
  const b = spawn('unshare', ['--pid', '--fork', '--mount-proc', 'node', script, lock, '0'], { env });
  const bHeld = when(b, 'HELD', out);
  const aReleased = await when(a, 'RELEASED', out);
  assert.ok((await bHeld) >= aReleased, `the second namespace took the lock at ${await bHeld}, before the holder released it at ${aReleased}:\n${out.join('')}`);
  assert.match(out.join(''), /LOG waiting for another process/);
});

test('record cache lock: a holder killed as PID 1 of its namespace is taken over once its heartbeat is stale', needsUnshare, async () => {
  const script = holderScript();
  const lock = path.join(tmpDir(), 'store.lk');
  const out: string[] = [];
  const a = spawn('unshare', ['--pid', '--fork', '--mount-proc', 'node', script, lock, '600000'], { env });
  await when(a, 'HELD', out);
  // SIGKILL the namespace's PID 1 (unshare's child), as `docker kill` does.
  const child = Number(spawnSync('ps', ['-o', 'pid=', '--ppid', String(a.pid)]).stdout.toString().trim());
  assert.ok(child > 0);
  const killedAt = Date.now();
  process.kill(child, 'SIGKILL');
  const b = spawn('node', [script, lock, '0'], { env });
  const got = await when(b, 'HELD', out);
  assert.ok(got - killedAt < 10_000, `took ${got - killedAt} ms`);
  a.kill('SIGKILL');
});

test('record cache lock: processes racing to take over one stale lock end with exactly one holder at a time, none losing it', async () => {
  const records = path.resolve(__dirname, '..', 'src', 'data', 'cache', 'records.js');
  for (let round = 0; round < 4; round++) {
    const lock = path.join(tmpDir(), 'store.lk');
    // Left by a holder killed a minute ago: its heartbeat (the folder's mtime) stopped then.
    fs.mkdirSync(lock);
    const then = new Date(Date.now() - 60_000);
    fs.utimesSync(lock, then, then);
    const go = Date.now() + 600; // every process waits for the same instant, so their takeovers collide
    const script = `const { lockStore } = require(${JSON.stringify(records)});
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.max(0, ${go} - Date.now() - 3));
while (Date.now() < ${go});
(async () => {
  const l = await lockStore(${JSON.stringify(lock)}, () => undefined);
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, 300));
  let lost = '';
  try { l.check(); } catch (e) { lost = ' LOST ' + e.message; }
  const t1 = Date.now();
  l.unlock();
  console.log('held ' + t0 + ' ' + t1 + lost);
})();`;
    const one = () =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ['-e', script], { env, stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        child.stdout!.on('data', (d) => (out += d));
        child.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`exit ${code}: ${out}`))));
      });
    const got = await Promise.all(Array.from({ length: 5 }, one));
    assert.ok(got.every((g) => /^held \d+ \d+$/.test(g)), `round ${round}: a holder lost its lock: ${got.join(' | ')}`);
    const spans = got.map((g) => g.split(' ').slice(1).map(Number)).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < spans.length; i++) assert.ok(spans[i][0] >= spans[i - 1][1], `round ${round}: two holders at once: ${got.join(' | ')}`);
    assert.deepEqual(fs.readdirSync(path.dirname(lock)), [], 'no lock or takeover guard left');
  }
});

test('record cache lock: a taker that judged the lock stale just before another took it over (the worst interleaving of a race) leaves the new holder alone', async () => {
  const script = holderScript();
  const lock = path.join(tmpDir(), 'store.lk');
  fs.mkdirSync(lock);
  const then = new Date(Date.now() - 60_000);
  fs.utimesSync(lock, then, then);
  const judged = fs.statSync(lock).mtimeMs; // a slow taker saw this heartbeat stale...
  const out: string[] = [];
  const b = spawn(process.execPath, [script, lock, '2500', 'check'], { env });
  await when(b, 'HELD', out); // ...and meanwhile another process took the lock over
  let lost: Error | null = null;
  const t = await takeOver(lock, judged, 2000, 1000, () => takeLock(lock, 1000, (e) => (lost = e)));
  if (t.ok) await t.release?.().catch(() => undefined);
  assert.equal(t.ok, false, 'the slow taker must not take a lock another process holds now');
  assert.equal(t.ok ? null : t.code, 'ELOCKED');
  assert.equal(lost, null);
  await when(b, 'RELEASED', out);
  assert.doesNotMatch(out.join(''), /LOST/, `the new holder kept its lock: ${out.join('')}`);
  assert.equal(fs.existsSync(lock), false, 'released by its holder');
});
