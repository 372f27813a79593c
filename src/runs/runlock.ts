/**
 * A run's lock, `<run>/run.lock`: a proper-lockfile lock (a folder made with
 * mkdir, which of two processes only one can do), whose holder refreshes its
 * mtime every LOCK_UPDATE_MS from a worker thread (lock-worker.ts). Whether the
 * holder lives is decided by that heartbeat alone: a lock not refreshed for
 * LOCK_STALE_MS (GRANULAR_LOCK_STALE_MS, default 10 s) belongs to a process
 * that is gone and is taken over. A PID decides nothing: it means nothing in
 * another PID namespace, container or host sharing the folder, and the PID 1
 * of a killed container would look alive forever.
 *
 * `run.lock.info` beside it (JSON: host, pid, started) names the holder in
 * messages only. Our own code rather than a library for this file and the
 * wait below: proper-lockfile takes and refreshes the lock; what a run does
 * while another holds it (tell a live holder from a dead one by watching the
 * heartbeat, refuse the first, take over the second) is granular's rule.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MessageChannel, MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import { UsageError } from '../util/errors';
import { sleepSync, writeJsonAtomic } from '../util/fsx';
import { LOCK_STALE_MS, LOCK_UPDATE_MS } from '../util/lock-timing';

export const LOCK_FILE = 'run.lock';
export const LOCK_INFO_FILE = 'run.lock.info';

/** Who holds a lock, for messages: from run.lock.info, which may be missing or torn. */
export interface LockInfo {
  host?: string;
  pid?: number;
  started?: string;
}

interface Held {
  worker: Worker;
  port: MessagePort;
  flag: Int32Array;
  lockPath: string;
  infoPath: string;
}

/** Locks this process holds, by lock path. */
const held = new Map<string, Held>();
let exitHook = false;

/** Whether `pid` is a live process in this PID namespace (used for the parent watchdog and old PID-file locks only). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readInfo(dir: string): LockInfo {
  try {
    const v = JSON.parse(fs.readFileSync(path.join(dir, LOCK_INFO_FILE), 'utf8'));
    return v && typeof v === 'object' ? (v as LockInfo) : {};
  } catch {
    return {};
  }
}

/** "process 123 on host h (since <time>)", or "another process" when run.lock.info says nothing. */
export function describeHolder(info: LockInfo): string {
  if (!info.pid) return 'another process';
  return `process ${info.pid}${info.host ? ` on host ${info.host}` : ''}${info.started ? ` (since ${info.started})` : ''}`;
}

/** mtime of the lock in ms, or null when there is none. */
function heartbeat(lockPath: string): number | null {
  try {
    return fs.statSync(lockPath).mtimeMs;
  } catch {
    return null;
  }
}

/**
 * Whether a live process holds `dir`'s run.lock, judged without waiting: the
 * lock exists and its heartbeat is younger than the stale time (an old PID-file
 * lock: its PID is alive here). A run killed a moment ago counts as live until
 * its heartbeat goes stale. `holder` names it from run.lock.info.
 */
export function lockStatus(dir: string): { live: boolean; holder: string; info: LockInfo } {
  const lockPath = path.join(dir, LOCK_FILE);
  let st: fs.Stats;
  try {
    st = fs.statSync(lockPath);
  } catch {
    return { live: false, holder: 'nobody', info: {} };
  }
  if (st.isFile()) {
    const pid = legacyPid(lockPath);
    return { live: pid > 0 && isAlive(pid), holder: `process ${pid}`, info: { pid } };
  }
  const info = readInfo(dir);
  return { live: Date.now() - st.mtimeMs < LOCK_STALE_MS, holder: describeHolder(info), info };
}

/** The PID in a run.lock file written by granular before the lock became a heartbeat folder, or 0. */
function legacyPid(file: string): number {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : 0;
  } catch {
    return 0;
  }
}

function call(h: Held, msg: Record<string, unknown>): { ok: boolean; code?: string | null; message?: string } {
  Atomics.store(h.flag, 0, 0);
  h.port.postMessage(msg);
  // The worker answers within milliseconds; a minute means it is stuck (a hung file system).
  if (Atomics.wait(h.flag, 0, 0, 60_000) === 'timed-out') throw new Error(`no answer from the thread that holds ${h.lockPath} within 60 s (is its file system hung?)`);
  const got = receiveMessageOnPort(h.port);
  if (!got) throw new Error(`the thread that holds ${h.lockPath} answered nothing`);
  return got.message;
}

function start(dir: string): Held {
  const lockPath = path.join(dir, LOCK_FILE);
  const { port1, port2 } = new MessageChannel();
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(path.join(__dirname, 'lock-worker.js'), {
    workerData: { port: port2, flag: flag.buffer, lockPath, stale: LOCK_STALE_MS, update: LOCK_UPDATE_MS },
    transferList: [port2],
  });
  worker.unref();
  port1.unref();
  return { worker, port: port1, flag, lockPath, infoPath: path.join(dir, LOCK_INFO_FILE) };
}

function stop(h: Held): void {
  h.port.close();
  void h.worker.terminate();
}

function holdUntilExit(): void {
  if (exitHook) return;
  exitHook = true;
  // A process leaving without releaseLock (a second signal, a crash) still removes what it holds.
  process.on('exit', () => {
    for (const h of held.values()) {
      fs.rmSync(h.infoPath, { force: true });
      try {
        fs.rmdirSync(h.lockPath);
      } catch {
        // gone already
      }
    }
  });
}

/**
 * Take the run's lock, `<dir>/run.lock`. A lock held by a live process is
 * refused: while another process holds it, its heartbeat is watched; if it
 * moves (the holder refreshed it) or the lock is released meanwhile, the
 * holder lives and a UsageError (exit 2) names it (run.lock.info). One whose
 * heartbeat is the stale time old is taken over (at most
 * GRANULAR_LOCK_STALE_MS of waiting; the returned note says so), under a
 * second lock so that of several processes only one takes it (lock-worker.ts). A lock whose
 * heartbeat neither moves nor ages (an mtime in the future: clocks of two hosts
 * apart) is refused after twice the stale time. With `fresh`, a folder that
 * holds anything besides the lock (another run got there first) is refused
 * too. Returns a note when a stale lock was taken over, else null.
 */
export function acquireLock(dir: string, fresh = false): string | null {
  const lockPath = path.join(dir, LOCK_FILE);
  if (held.has(lockPath)) return null;
  let note: string | null = null;
  const legacy = fs.statSync(lockPath, { throwIfNoEntry: false });
  if (legacy?.isFile()) {
    // Written by granular before run.lock was a heartbeat folder: a PID is all it holds, and only this namespace can judge it.
    const pid = legacyPid(lockPath);
    if (pid && isAlive(pid)) throw new UsageError(`run '${dir}' is in use by process ${pid} (run.lock, written by an older granular). Wait for it to finish, or stop it first; if that process is in another container or host and gone, delete ${lockPath}.`);
    fs.rmSync(lockPath, { force: true });
    note = `removed a run.lock left by process ${pid || '?'} (older granular), which is no longer running`;
  }
  const h = start(dir);
  let first: number | null = null;
  let waitedFrom = 0;
  let info: LockInfo = {};
  let tookOver = false;
  const ask = (msg: Record<string, unknown>) => {
    try {
      return call(h, msg);
    } catch (e) {
      stop(h);
      throw e;
    }
  };
  for (;;) {
    const r = ask({ op: 'try' });
    if (r.ok) break;
    if (r.code !== 'ELOCKED') {
      stop(h);
      throw new Error(`cannot take the run's lock ${lockPath}: ${r.message}`);
    }
    const beat = heartbeat(lockPath);
    if (first === null && beat === null) continue; // released between the two looks: try again
    if (first === null) {
      first = beat;
      waitedFrom = Date.now();
      info = readInfo(dir);
    }
    if (beat === null || beat !== first) {
      stop(h);
      const now = readInfo(dir);
      throw new UsageError(`run '${dir}' is in use by ${describeHolder(now.pid ? now : info)} (run.lock${beat === null ? ', released just now' : ', its heartbeat is fresh'}). Wait for it to finish, or stop it first.`);
    }
    if (Date.now() - beat >= LOCK_STALE_MS) {
      // Stale: its holder is gone. Taken over under the takeover lock, only if it is still this one.
      const t = ask({ op: 'takeover', mtimeMs: beat });
      if (t.ok) {
        tookOver = true;
        break;
      }
      if (t.code !== 'ELOCKED' && t.code !== 'EBUSY') {
        stop(h);
        throw new Error(`cannot take over the run's lock ${lockPath}: ${t.message}`);
      }
      // Another process took it over first (the next look sees its heartbeat) or is doing so.
    } else if (Date.now() - waitedFrom > 2 * LOCK_STALE_MS + LOCK_UPDATE_MS) {
      stop(h);
      throw new UsageError(`run '${dir}' is locked by ${describeHolder(info)} (run.lock), whose heartbeat time ${new Date(beat).toISOString()} neither moves nor ages (a clock on another host ahead of this one?). If no process uses this run, delete ${lockPath}.`);
    }
    sleepSync(Math.min(200, LOCK_UPDATE_MS / 5));
  }
  if (tookOver) note = `taking over a stale run.lock left by ${describeHolder(info)}, whose heartbeat stopped (killed, or its container or host is gone)`;
  held.set(lockPath, h);
  holdUntilExit();
  writeJsonAtomic(h.infoPath, { host: os.hostname(), pid: process.pid, started: new Date().toISOString() });
  if (fresh) {
    const others = fs.readdirSync(dir).filter((f) => !f.startsWith(LOCK_FILE));
    if (others.length) {
      releaseLock(dir);
      throw new UsageError(`run folder '${dir}' was filled by another process (${others.slice(0, 3).join(', ')}) while this run was being prepared. Choose another --run-dir.`);
    }
  }
  return note;
}

/** Release the run's lock if this process holds it (run.lock.info first, then the lock). */
export function releaseLock(dir: string): void {
  const lockPath = path.join(dir, LOCK_FILE);
  const h = held.get(lockPath);
  if (!h) return;
  held.delete(lockPath);
  fs.rmSync(h.infoPath, { force: true });
  try {
    call(h, { op: 'release' });
  } finally {
    stop(h);
  }
}
