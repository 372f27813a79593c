/**
 * The thread that holds a run's heartbeat lock, `run.lock.d` (see
 * runlock.ts). It takes the lock with proper-lockfile when asked and then
 * keeps its heartbeat (the lock folder's mtime) fresh on its own event loop,
 * so a main thread busy for longer than the stale time (a long synchronous
 * kernel, a model save) does not let the lock go stale while the run is alive.
 *
 * Messages on `port` (the main thread waits for each reply on `flag`):
 *   {op: 'try'}      -> {ok: true} | {ok: false, code, message}: take the lock
 *                       if it is free; a held lock is never judged stale here;
 *   {op: 'takeover', mtimeMs, path?} -> the same: the main thread judged the
 *                       lock stale (its heartbeat stood at mtimeMs for the
 *                       stale time); it is removed and taken under a second
 *                       lock so that of several processes only one gets it
 *                       (src/util/heartbeat-lock.ts `takeOver`); `code:
 *                       'EBUSY'` while another process is taking it over. With
 *                       `path` (an older granular's lock folder, `run.lock`),
 *                       that folder is only removed, under its own
 *                       `<path>.takeover` as older granular guarded it;
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
import { Release, takeLock, takeOver } from '../util/heartbeat-lock';

interface Data {
  port: MessagePort;
  flag: SharedArrayBuffer;
  lockPath: string;
  stale: number;
  update: number;
}

const { port, flag, lockPath, stale, update } = workerData as Data;
const signal = new Int32Array(flag);
let release: Release | null = null;

type Reply = { ok: boolean; code?: string | null; message?: string };
const failure = (e: NodeJS.ErrnoException): Reply => ({ ok: false, code: e.code ?? null, message: e.message });

function reply(msg: Reply): void {
  port.postMessage(msg);
  Atomics.store(signal, 0, 1);
  Atomics.notify(signal, 0);
}

const take = (): Promise<Release> => takeLock(lockPath, update, onCompromised);

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

port.on('message', (msg: { op: string; mtimeMs?: number; path?: string }) => {
  if (msg.op === 'try') {
    take().then(
      (r) => {
        release = r;
        reply({ ok: true });
      },
      (e: NodeJS.ErrnoException) => reply(failure(e)),
    );
  } else if (msg.op === 'takeover') {
    void takeOver(msg.path ?? lockPath, msg.mtimeMs!, stale, update, msg.path ? null : take).then((t) => {
      if (!t.ok) return reply(t);
      if (t.release) release = t.release;
      reply({ ok: true });
    });
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
