import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { needsUnshare, tmpDir } from './helpers';

// Separate PID namespaces need root (or user namespaces) and util-linux unshare; CI requires them (GRANULAR_REQUIRE_UNSHARE=1).

/** A process that takes the record cache lock `file`, prints HELD, holds it `ms`, releases it and prints RELEASED. */
function holderScript(): string {
  const file = path.join(tmpDir(), 'holder.js');
  const records = path.resolve(__dirname, '..', 'src', 'data', 'cache', 'records.js');
  fs.writeFileSync(
    file,
    `const { lockStore } = require(${JSON.stringify(records)});
(async () => {
  const l = await lockStore(process.argv[2], (m) => console.log('LOG ' + m));
  console.log('HELD ' + Date.now() + ' pid ' + process.pid);
  setTimeout(() => { l.unlock(); console.log('RELEASED ' + Date.now()); }, Number(process.argv[3]));
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
