/**
 * A run's lock. Three entries in the run folder while a process runs it:
 *   run.lock       a file: the holder's PID, in decimal, then a newline (the
 *                  run-folder contract, ../shared/DESIGN.md "Run directory":
 *                  `kill $(cat RUN/run.lock)` works); absent once the run ended;
 *   run.lock.d/    the lock itself: a proper-lockfile lock (a folder made with
 *                  mkdir, which of two processes only one can do), whose holder
 *                  refreshes its mtime every LOCK_UPDATE_MS from a worker
 *                  thread (lock-worker.ts);
 *   run.lock.info  JSON {host, pid, started}: names the holder in messages.
 * run.lock.d is taken first, run.lock and run.lock.info are written (temp
 * file + rename) right after it, and removed just before it is released (and
 * on process exit), so a run.lock whose run.lock.d is gone is never ours.
 *
 * Whether the holder lives is decided by the heartbeat alone: a run.lock.d not
 * refreshed for LOCK_STALE_MS (GRANULAR_LOCK_STALE_MS, default 10 s) belongs
 * to a process that is gone and is taken over. The PID in run.lock decides
 * nothing: it means nothing in another PID namespace, container or host
 * sharing the folder, and the PID 1 of a killed container would look alive
 * forever. It is there for people and scripts on the holder's machine.
 *
 * Older run folders are understood: a run.lock FILE with no run.lock.d was
 * written by granular before its lock had a heartbeat (judged by its PID in
 * this namespace, all it holds, and replaced when that process is gone); a
 * run.lock FOLDER is the heartbeat lock of granular between that and this
 * layout (judged by its mtime, and removed once stale under
 * `run.lock.takeover`, the guard that granular used). Since a holder's
 * run.lock is a live PID file, granular of either older layout, started on a
 * live run in the same PID namespace, refuses it too.
 *
 * Our own code rather than a library for these files and the wait below:
 * proper-lockfile takes and refreshes the lock, src/util/heartbeat-lock.ts
 * takes a stale one over; what a run does while another holds it (tell a live
 * holder from a dead one by watching the heartbeat, refuse the first, take
 * over the second) and the run-folder files are granular's rules.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MessageChannel, MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import { UsageError } from '../util/errors';
import { sleepSync, writeFileAtomic, writeJsonAtomic } from '../util/fsx';
import { heartbeat } from '../util/heartbeat-lock';
import { LOCK_STALE_MS, LOCK_UPDATE_MS } from '../util/lock-timing';

/** The holder's PID (a file), as the run-folder contract says. */
export const LOCK_FILE = 'run.lock';
/** The heartbeat lock folder whose mtime decides whether the holder lives. */
export const LOCK_DIR = 'run.lock.d';
/** Host, PID and start time of the holder (JSON), for messages. */
export const LOCK_INFO_FILE = 'run.lock.info';

/** Who holds a lock, for messages: from run.lock.info (or the PID in run.lock), which may be missing or torn. */
export interface LockInfo {
  host?: string;
  pid?: number;
  started?: string;
}

interface Held {
  worker: Worker;
  port: MessagePort;
  flag: Int32Array;
  /** run.lock.d */
  lockPath: string;
  /** What this process made, by path: its identity (device, inode, birth time), so that only our own entries are removed. */
  mine: Map<string, string>;
}

/** Locks this process holds, by lock path. */
const held = new Map<string, Held>();
let exitHook = false;

/** Whether `pid` is a live process in this PID namespace (used for the parent watchdog and run.lock files of older granular only). */
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

/** run.lock.info, or failing that the PID in run.lock. */
function holderInfo(dir: string): LockInfo {
  const info = readInfo(dir);
  if (info.pid) return info;
  const pid = filePid(path.join(dir, LOCK_FILE));
  return pid ? { pid } : {};
}

/** "process 123 on host h (since <time>)", or "another process" when nothing names it. */
export function describeHolder(info: LockInfo): string {
  if (!info.pid) return 'another process';
  return `process ${info.pid}${info.host ? ` on host ${info.host}` : ''}${info.started ? ` (since ${info.started})` : ''}`;
}

/** The PID in a run.lock file, or 0 (none, torn, or a folder). */
function filePid(file: string): number {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : 0;
  } catch {
    return 0;
  }
}

/**
 * Whether a live process holds `dir`'s lock, judged without waiting: run.lock.d
 * exists and its heartbeat is younger than the stale time. Older layouts: a
 * run.lock folder, by the same rule; a run.lock file with no run.lock.d, by
 * its PID in this namespace. A run killed a moment ago counts as live until
 * its heartbeat goes stale. `holder` names it (run.lock.info, or run.lock).
 */
export function lockStatus(dir: string): { live: boolean; holder: string; info: LockInfo } {
  const fresh = (beat: number) => Date.now() - beat < LOCK_STALE_MS;
  const beat = heartbeat(path.join(dir, LOCK_DIR));
  if (beat !== null) {
    const info = holderInfo(dir);
    return { live: fresh(beat), holder: describeHolder(info), info };
  }
  const lockFile = path.join(dir, LOCK_FILE);
  const st = fs.statSync(lockFile, { throwIfNoEntry: false });
  if (!st) return { live: false, holder: 'nobody', info: {} };
  if (st.isDirectory()) {
    const info = readInfo(dir);
    return { live: fresh(st.mtimeMs), holder: describeHolder(info), info };
  }
  const pid = filePid(lockFile);
  return { live: pid > 0 && isAlive(pid), holder: `process ${pid}`, info: { pid } };
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
  const lockPath = path.join(dir, LOCK_DIR);
  const { port1, port2 } = new MessageChannel();
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(path.join(__dirname, 'lock-worker.js'), {
    workerData: { port: port2, flag: flag.buffer, lockPath, stale: LOCK_STALE_MS, update: LOCK_UPDATE_MS },
    transferList: [port2],
  });
  worker.unref();
  port1.unref();
  return { worker, port: port1, flag, lockPath, mine: new Map() };
}

function stop(h: Held): void {
  h.port.close();
  void h.worker.terminate();
}

function identity(p: string): string | null {
  const st = fs.statSync(p, { throwIfNoEntry: false });
  return st ? `${st.dev}:${st.ino}:${st.birthtimeMs}` : null;
}

/** Note `p` as made by this process (right after making it). */
function own(h: Held, p: string): void {
  const id = identity(p);
  if (id) h.mine.set(p, id);
}

/** Remove `p` if it is still the entry this process made (not one another process made after taking the run over). */
function removeOwn(h: Held, p: string): void {
  const id = h.mine.get(p);
  h.mine.delete(p);
  if (!id || identity(p) !== id) return;
  try {
    if (p === h.lockPath) fs.rmdirSync(p);
    else fs.rmSync(p, { force: true });
  } catch {
    // gone already
  }
}

function holdUntilExit(): void {
  if (exitHook) return;
  exitHook = true;
  // A process leaving without releaseLock (a second signal, a crash) still removes what it holds: run.lock first, the lock last.
  process.on('exit', () => {
    for (const h of held.values()) for (const p of [...h.mine.keys()].sort((a, b) => Number(a === h.lockPath) - Number(b === h.lockPath))) removeOwn(h, p);
  });
}

/**
 * While another process holds the heartbeat lock `target`, watch its
 * heartbeat: if it moves (the holder refreshed it) or the lock is released
 * meanwhile, the holder lives and a UsageError (exit 2) names it. One whose
 * heartbeat is the stale time old is taken over by the lock thread (at most
 * GRANULAR_LOCK_STALE_MS of waiting), guarded so that of several processes
 * only one gets it; with `clearOnly` (an older granular's run.lock folder) it
 * is only removed. One whose heartbeat neither moves nor ages (an mtime in
 * the future: clocks of two hosts apart) is refused after twice the stale
 * time. `attempt` is tried first and after every look: true ends the wait
 * (the lock was taken, or is gone). Returns the info of the holder whose
 * stale lock was taken over, or null when none was.
 */
function outwait(dir: string, h: Held, target: string, attempt: () => boolean, clearOnly: boolean): LockInfo | null {
  let first: number | null = null;
  let waitedFrom = 0;
  let info: LockInfo = {};
  for (;;) {
    if (attempt()) return null;
    const beat = heartbeat(target);
    if (first === null && beat === null) continue; // released between the two looks: try again
    if (first === null) {
      first = beat;
      waitedFrom = Date.now();
      info = holderInfo(dir);
    }
    if (beat === null || beat !== first) {
      const now = holderInfo(dir);
      throw new UsageError(`run '${dir}' is in use by ${describeHolder(now.pid ? now : info)} (run.lock${beat === null ? ', released just now' : ', its heartbeat is fresh'}). Wait for it to finish, or stop it first.`);
    }
    if (Date.now() - beat >= LOCK_STALE_MS) {
      // Stale: its holder is gone. Taken over under the takeover lock, only if it is still this one.
      const t = call(h, { op: 'takeover', mtimeMs: beat, path: clearOnly ? target : undefined });
      if (t.ok) return info;
      if (t.code !== 'ELOCKED' && t.code !== 'EBUSY') throw new Error(`cannot take over the run's lock ${target}: ${t.message}`);
      // Another process took it over first (the next look sees its heartbeat) or is doing so.
    } else if (Date.now() - waitedFrom > 2 * LOCK_STALE_MS + LOCK_UPDATE_MS) {
      throw new UsageError(`run '${dir}' is locked by ${describeHolder(info)} (${path.basename(target)}), whose heartbeat time ${new Date(beat).toISOString()} neither moves nor ages (a clock on another host ahead of this one?). If no process uses this run, delete ${target} and ${path.join(dir, LOCK_FILE)}.`);
    }
    sleepSync(Math.min(200, LOCK_UPDATE_MS / 5));
  }
}

/**
 * Take the run's lock: run.lock.d, then run.lock (this process's PID) and
 * run.lock.info. A lock held by a live process is refused with a UsageError
 * (exit 2) naming it; a stale one is taken over (see `outwait`); the lock of
 * an older granular in the folder is judged as that granular did (header).
 * With `fresh`, a folder that holds anything besides the lock (another run got
 * there first) is refused too. Returns a note when a lock left by a process
 * that is gone was taken over, else null. Errors: UsageError for a live holder
 * or a folder taken meanwhile; Error when the lock's files cannot be made.
 */
export function acquireLock(dir: string, fresh = false): string | null {
  const lockPath = path.join(dir, LOCK_DIR);
  if (held.has(lockPath)) return null;
  const pidPath = path.join(dir, LOCK_FILE);
  const notes: string[] = [];
  const h = start(dir);
  try {
    const old = fs.statSync(pidPath, { throwIfNoEntry: false });
    if (old?.isFile() && heartbeat(lockPath) === null) {
      // Written by granular before its lock had a heartbeat: a PID is all it holds, and only this namespace can judge it. Replaced by ours below.
      const pid = filePid(pidPath);
      if (pid && isAlive(pid)) throw new UsageError(`run '${dir}' is in use by process ${pid} (run.lock, with no heartbeat: written by an older granular). Wait for it to finish, or stop it first; if that process is in another container or host and gone, delete ${pidPath}.`);
      notes.push(`replacing a run.lock left by process ${pid || '?'} (older granular), which is no longer running`);
    } else if (old?.isDirectory()) {
      // The heartbeat lock of granular before run.lock became a PID file again.
      const gone = outwait(dir, h, pidPath, () => !fs.statSync(pidPath, { throwIfNoEntry: false })?.isDirectory(), true);
      if (gone) notes.push(`taking over a stale run.lock folder (older granular) left by ${describeHolder(gone)}, whose heartbeat stopped`);
    }
    const tryTake = () => {
      const r = call(h, { op: 'try' });
      if (r.ok) return true;
      if (r.code !== 'ELOCKED') throw new Error(`cannot take the run's lock ${lockPath}: ${r.message}`);
      return false;
    };
    const gone = outwait(dir, h, lockPath, tryTake, false);
    if (gone) notes.push(`taking over a stale run.lock left by ${describeHolder(gone)}, whose heartbeat stopped (killed, or its container or host is gone)`);
  } catch (e) {
    stop(h);
    throw e;
  }
  held.set(lockPath, h);
  own(h, lockPath);
  holdUntilExit();
  try {
    writeFileAtomic(pidPath, `${process.pid}\n`);
    own(h, pidPath);
    const infoPath = path.join(dir, LOCK_INFO_FILE);
    writeJsonAtomic(infoPath, { host: os.hostname(), pid: process.pid, started: new Date().toISOString() });
    own(h, infoPath);
  } catch (e) {
    releaseLock(dir);
    if ((e as NodeJS.ErrnoException).code === 'EISDIR') throw new UsageError(`run '${dir}' was taken meanwhile by an older granular (its run.lock is a folder again). Wait for it to finish, or stop it first.`);
    throw new Error(`cannot write the run's lock file ${pidPath}: ${(e as Error).message}`);
  }
  if (fresh) {
    const others = fs.readdirSync(dir).filter((f) => !f.startsWith(LOCK_FILE));
    if (others.length) {
      releaseLock(dir);
      throw new UsageError(`run folder '${dir}' was filled by another process (${others.slice(0, 3).join(', ')}) while this run was being prepared. Choose another --run-dir.`);
    }
  }
  return notes.length ? notes.join('; ') : null;
}

/** Release the run's lock if this process holds it: run.lock and run.lock.info first (only if still ours), then run.lock.d. */
export function releaseLock(dir: string): void {
  const lockPath = path.join(dir, LOCK_DIR);
  const h = held.get(lockPath);
  if (!h) return;
  held.delete(lockPath);
  for (const p of [...h.mine.keys()]) if (p !== lockPath) removeOwn(h, p);
  h.mine.delete(lockPath);
  try {
    call(h, { op: 'release' });
  } finally {
    stop(h);
  }
}
