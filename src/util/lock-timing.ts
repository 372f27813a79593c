/**
 * Timing shared by granular's two locks, the record cache's `<base>.lk` and a
 * run's `run.lock.d` (beside `run.lock`, which holds the holder's PID): both
 * are proper-lockfile locks (a folder made with mkdir, whose mtime its holder
 * refreshes; src/util/heartbeat-lock.ts), so whether their holder lives is decided
 * by that heartbeat, never by a PID (a PID means nothing in another PID
 * namespace, container or host, and PID 1 of a killed container looks alive).
 *
 * GRANULAR_LOCK_STALE_MS (default 10000, at least 2000): a lock whose heartbeat
 * is this old belongs to a process that is gone and is taken over. Tests set
 * it low; a shared network folder with slow metadata may want it higher.
 */
export const LOCK_STALE_MS = Math.max(2000, Number(process.env.GRANULAR_LOCK_STALE_MS ?? 10_000) || 10_000);

/** How often a holder refreshes its lock's mtime (proper-lockfile's `update`). */
export const LOCK_UPDATE_MS = Math.max(1000, LOCK_STALE_MS / 4);
