/**
 * The part of granular's two heartbeat locks that they share: a run's
 * `run.lock.d` (taken from a worker thread, src/runs/lock-worker.ts) and the
 * record cache's `<base>.lk` (src/data/cache/records.ts). Both are
 * proper-lockfile locks: a folder made with mkdir (of two processes only one
 * can), whose mtime its holder refreshes every LOCK_UPDATE_MS; a lock whose
 * mtime is LOCK_STALE_MS old belongs to a process that is gone
 * (src/util/lock-timing.ts).
 *
 * Our own code rather than proper-lockfile's `stale` option for taking over a
 * stale lock: proper-lockfile removes and remakes the stale folder unguarded,
 * so two processes that both judged one lock stale can both remove it, the
 * second removing the first's new lock, and both then hold it. Here a stale
 * lock is removed only under a second lock, `<lock>.takeover`, and only if its
 * mtime is still the one the taker judged stale: of several processes taking
 * over one stale lock, exactly one gets it. Holders take their lock with an
 * infinite `stale`, so proper-lockfile never removes a lock on its own.
 */
import * as fs from 'node:fs';
import * as lockfile from 'proper-lockfile';

/** Releases a lock taken with `takeLock` (proper-lockfile's release). */
export type Release = () => Promise<void>;

/** The outcome of a takeover: `release` when taken; `code` 'ELOCKED' (another process took it over first) or 'EBUSY' (another is doing so now), or an fs error code. */
export type Takeover = { ok: true; release: Release | null } | { ok: false; code: string | null; message: string };

/** The heartbeat of the lock folder `lockPath`: its mtime in ms since the epoch, or null when there is none. */
export function heartbeat(lockPath: string): number | null {
  try {
    return fs.statSync(lockPath).mtimeMs;
  } catch {
    return null;
  }
}

/**
 * Take the lock folder `lockPath` if it is free, and refresh its mtime every
 * `updateMs` ms (at least 1000) from this thread's event loop. A held lock is
 * never judged stale here: it rejects with code 'ELOCKED' (use `takeOver`).
 * `onCompromised` is called if the folder is found changed or gone while held
 * (proper-lockfile's compromise: mtime not the one last written).
 */
export function takeLock(lockPath: string, updateMs: number, onCompromised: (err: Error) => void): Promise<Release> {
  return lockfile.lock(lockPath, { realpath: false, lockfilePath: lockPath, stale: Infinity, update: updateMs, retries: 0, onCompromised });
}

/**
 * Take over the lock folder `lockPath`, judged stale by the caller because its
 * heartbeat stood at `mtimeMs` for the stale time. Under `<lockPath>.takeover`
 * (itself a proper-lockfile lock, stale after `staleMs`, since a process may be
 * killed while holding it), the folder is removed if its mtime is still
 * `mtimeMs` (an empty folder: rmdir) and then, with `take`, taken with it.
 * Without `take` (an older layout's lock that is only to be cleared) the result
 * has `release: null`. Resolves, never rejects.
 */
export async function takeOver(lockPath: string, mtimeMs: number, staleMs: number, updateMs: number, take: (() => Promise<Release>) | null): Promise<Takeover> {
  const guard = `${lockPath}.takeover`;
  let unguard: Release;
  try {
    unguard = await lockfile.lock(guard, { realpath: false, lockfilePath: guard, stale: staleMs, update: updateMs, retries: 0, onCompromised: () => undefined });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return err.code === 'ELOCKED' ? { ok: false, code: 'EBUSY', message: 'another process is taking the lock over' } : { ok: false, code: err.code ?? null, message: err.message };
  }
  let out: Takeover;
  try {
    const st = fs.statSync(lockPath, { throwIfNoEntry: false });
    if (st && st.mtimeMs !== mtimeMs) {
      out = { ok: false, code: 'ELOCKED', message: 'another process took the lock over first' };
    } else {
      if (st) fs.rmdirSync(lockPath);
      out = { ok: true, release: take ? await take() : null };
    }
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    out = { ok: false, code: err.code ?? null, message: err.message };
  }
  await unguard().catch(() => undefined);
  return out;
}
