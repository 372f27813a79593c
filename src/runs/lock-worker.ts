/**
 * The thread that holds a run's `run.lock` (see runlock.ts). It takes the
 * lock with proper-lockfile when asked and then keeps its heartbeat (the lock
 * folder's mtime) fresh on its own event loop, so a main thread busy for
 * longer than the stale time (a long synchronous kernel, a model save) does
 * not let the lock go stale while the run is alive.
 *
 * Messages on `port` (the main thread waits for each reply on `flag`):
 *   {op: 'try'}      -> {ok: true} | {ok: false, code, message}: take the lock
 *                       if it is free; a held lock is never judged stale here;
 *   {op: 'takeover', mtimeMs} -> the same: the main thread judged the lock
 *                       stale (its heartbeat stood at mtimeMs for the stale
 *                       time); under a second lock, `run.lock.takeover`, it is
 *                       removed and taken if its mtime is still mtimeMs, so of
 *                       several processes taking over one stale lock only one
 *                       gets it (proper-lockfile's own stale takeover removes
 *                       and remakes the folder unguarded: two processes could
 *                       both remove the stale one, the second removing the
 *                       first's new lock); `code: 'EBUSY'` while another
 *                       process holds the takeover lock;
 *   {op: 'release'}  -> {ok: true} | {ok: false, code, message}.
 * The lock is taken with an infinite `stale`: proper-lockfile then never
 * removes a lock on its own, and a holder whose refresh was late (the machine
 * slept) keeps its lock unless another process took it meanwhile. If the lock
 * is found changed (its mtime is not the one we wrote, or it vanished) it is
 * taken again when it is free; if another process holds it, that process took
 * the run over, and this process is killed at once (SIGKILL), before it
 * writes anything more into a run folder that is no longer its own.
 */
import * as fs from 'node:fs';
import { MessagePort, workerData } from 'node:worker_threads';
import * as lockfile from 'proper-lockfile';

interface Data {
  port: MessagePort;
  flag: SharedArrayBuffer;
  lockPath: string;
  stale: number;
  update: number;
}

const { port, flag, lockPath, stale, update } = workerData as Data;
const signal = new Int32Array(flag);
let release: (() => Promise<void>) | null = null;

function reply(msg: Reply): void {
  port.postMessage(msg);
  Atomics.store(signal, 0, 1);
  Atomics.notify(signal, 0);
}

function take(): Promise<() => Promise<void>> {
  return lockfile.lock(lockPath, { realpath: false, lockfilePath: lockPath, stale: Infinity, update, retries: 0, onCompromised });
}

type Reply = { ok: boolean; code?: string | null; message?: string };
const failure = (e: NodeJS.ErrnoException): Reply => ({ ok: false, code: e.code ?? null, message: e.message });

/** Take over the lock whose heartbeat stood at `mtimeMs` (see the header), under the takeover lock. */
async function takeover(mtimeMs: number): Promise<Reply> {
  const guard = `${lockPath}.takeover`;
  let unguard: () => Promise<void>;
  try {
    // The guard may itself be left by a process killed while taking over: stale after `stale` ms.
    unguard = await lockfile.lock(guard, { realpath: false, lockfilePath: guard, stale, update, retries: 0, onCompromised: () => undefined });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return err.code === 'ELOCKED' ? { ok: false, code: 'EBUSY', message: 'another process is taking the lock over' } : failure(err);
  }
  let out: Reply;
  try {
    const st = fs.statSync(lockPath, { throwIfNoEntry: false });
    if (st && st.mtimeMs !== mtimeMs) {
      out = { ok: false, code: 'ELOCKED', message: 'another process took the lock over first' };
    } else {
      if (st) fs.rmdirSync(lockPath);
      release = await take();
      out = { ok: true };
    }
  } catch (e) {
    out = failure(e as NodeJS.ErrnoException);
  }
  await unguard().catch(() => undefined);
  return out;
}

function onCompromised(err: Error): void {
  release = null;
  take().then(
    (r) => {
      release = r;
    },
    (e: NodeJS.ErrnoException) => {
      // fs.writeSync: the main thread may be blocked, and the process ends next.
      fs.writeSync(2, `granular: lost ${lockPath} (${err.message}) and another process holds it now (${e.code ?? e.message}): it took this run over. Stopping at once without writing more.\n`);
      process.kill(process.pid, 'SIGKILL');
    },
  );
}

port.on('message', (msg: { op: string; mtimeMs?: number }) => {
  if (msg.op === 'try') {
    take().then(
      (r) => {
        release = r;
        reply({ ok: true });
      },
      (e: NodeJS.ErrnoException) => reply(failure(e)),
    );
  } else if (msg.op === 'takeover') {
    void takeover(msg.mtimeMs!).then(reply);
  } else if (msg.op === 'release') {
    const r = release;
    release = null;
    if (!r) return reply({ ok: true });
    r().then(
      () => reply({ ok: true }),
      (e: NodeJS.ErrnoException) => reply(failure(e)),
    );
  }
});
