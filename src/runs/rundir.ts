import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../util/errors';
import { claimNewDir, createExclusive, isNonEmptyDir, readJson, sanitizeName, sleepSync, writeFileAtomic, writeJsonAtomic } from '../util/fsx';

/**
 * The run folder: every file a run writes, and the rules for creating one.
 * Files that readers rely on are written via temp file + rename.
 */
export const FILES = {
  config: 'config.yaml',
  command: 'command.txt',
  hierarchy: 'hierarchy.json',
  split: 'split.json',
  env: 'env.json',
  lock: 'run.lock',
  metrics: 'metrics.jsonl',
  summary: 'summary.json',
  run: 'run.json',
  model: 'model',
  modelBest: 'model-best',
  checkpoint: 'checkpoint',
  /** Re-evaluations by `granular eval`: eval/<time>/ (config.yaml, command.txt, summary.json). */
  eval: 'eval',
  /** Beside the runs of a sweep (runs/<sweep>/sweep.json), not inside a run. */
  sweep: 'sweep.json',
} as const;

export function timestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/**
 * The name a run gets without --run-dir: `runs/<stage>-<name>-<YYYYMMDD-HHMMSS>`.
 * `createRunDir(dir, true)` claims it, as `-2`, `-3`, ... when it is taken.
 */
export function defaultRunDir(stage: string, name: string, root = 'runs'): string {
  return path.join(root, sanitizeName(`${stage}-${name}-${timestamp()}`));
}

/** Check (without creating anything) that a run may be written to `dir`. */
export function checkNewRunDir(dir: string): void {
  if (isNonEmptyDir(dir)) {
    const status = readSummaryOrNull(dir)?.status;
    if (status === 'completed') {
      throw new UsageError(`run folder '${dir}' holds a completed run. Choose another --run-dir; to build on that run, evaluate it ('granular eval ${dir}') or fine-tune from it ('granular finetune --from ${dir}').`);
    }
    if (!fs.existsSync(path.join(dir, FILES.config))) throw new UsageError(`run folder '${dir}' already exists, is not empty and is not a run folder. Choose another --run-dir.`);
    throw new UsageError(`run folder '${dir}' already exists and holds a${status ? ` ${status}` : 'n unfinished'} run. Choose another --run-dir, or continue that run with --resume ${dir}.`);
  }
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new UsageError(`--run-dir '${dir}' exists and is not a folder.`);
}

/**
 * Make the run folder and return it. A default name (`numbered`) is claimed
 * atomically, moving on to `-2`, `-3`, ... if another process got it first
 * (runs started in the same second); an explicit --run-dir may already exist
 * empty. Either way the lock (`acquireLock`) is what makes the folder this
 * process's: call it next.
 */
export function createRunDir(dir: string, numbered: boolean): string {
  if (numbered) return claimNewDir(dir);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** Claim `<runDir>/eval/<time>/` for one evaluation (`-2`, `-3`, ... when several end in the same second). */
export function claimEvalDir(runDir: string): string {
  return claimNewDir(path.join(runDir, FILES.eval, timestamp()));
}

export function appendMetrics(dir: string, row: Record<string, unknown>): void {
  // One write call per line: a crash tears at most the last line.
  fs.appendFileSync(path.join(dir, FILES.metrics), JSON.stringify(row) + '\n');
}

/** Rows of metrics.jsonl; a torn last line is dropped. */
export function readMetrics(dir: string): Array<Record<string, unknown>> {
  return readMetricsChecked(dir).rows;
}

/** Rows of metrics.jsonl, and whether a torn (unparseable) last line was dropped. */
export function readMetricsChecked(dir: string): { rows: Array<Record<string, unknown>>; torn: boolean } {
  const file = path.join(dir, FILES.metrics);
  if (!fs.existsSync(file)) return { rows: [], torn: false };
  const rows: Array<Record<string, unknown>> = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      rows.push(JSON.parse(line));
    } catch {
      // Only the last line can be torn (one write call per line); nothing follows it.
      return { rows, torn: true };
    }
  }
  return { rows, torn: false };
}

/** Rewrite metrics.jsonl keeping only `keep` rows (resume drops rows past the checkpoint). */
export function rewriteMetrics(dir: string, rows: ReadonlyArray<Record<string, unknown>>): void {
  writeFileAtomic(path.join(dir, FILES.metrics), rows.map((r) => JSON.stringify(r) + '\n').join(''));
}

export function writeSummary(dir: string, summary: Record<string, unknown>): void {
  writeJsonAtomic(path.join(dir, FILES.summary), summary);
}

/** summary.json, or null when absent or unreadable (for messages, which must not fail themselves). */
function readSummaryOrNull(dir: string): Record<string, unknown> | null {
  try {
    return readJson<Record<string, unknown>>(path.join(dir, FILES.summary));
  } catch {
    return null;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function lockOwner(file: string): number | null {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : 0;
  } catch {
    return null; // no such lock
  }
}

/**
 * Take the run's lock (run.lock holds the owner's PID, as the run folder
 * contract says, so a PID file rather than a lock library's own format). It
 * is created exclusively, so of two processes only one gets it; a live owner
 * is refused; a dead owner's stale lock is taken over under a second
 * exclusive lock (`run.lock.takeover`), so two processes cannot both take it
 * over. With `fresh`, a folder that holds anything besides the lock (another
 * run got there first) is refused too. Returns a note when a stale lock was
 * taken over. Errors: UsageError (exit 2) naming the owner.
 */
export function acquireLock(dir: string, fresh = false): string | null {
  const file = path.join(dir, FILES.lock);
  const me = `${process.pid}\n`;
  let note: string | null = null;
  for (let attempt = 0; ; attempt++) {
    if (createExclusive(file, me)) break;
    const pid = lockOwner(file);
    if (pid === null) continue; // released in between: try again
    if (pid === process.pid) break;
    if (pid && isAlive(pid)) {
      throw new UsageError(`run '${dir}' is in use by process ${pid} (run.lock). Wait for it to finish, or stop it first.`);
    }
    const guard = `${file}.takeover`;
    if (!createExclusive(guard, me)) {
      const taker = lockOwner(guard);
      if (taker && taker !== process.pid && isAlive(taker)) {
        // Another process is taking the stale lock over: see who wins.
        if (attempt > 100) throw new UsageError(`run '${dir}' is being taken over by process ${taker} (run.lock.takeover). Wait for it, or stop it first.`);
        sleepSync(20);
        continue;
      }
      fs.rmSync(guard, { force: true }); // left by a process that died taking over
      continue;
    }
    try {
      // Still the same stale owner? Then it is ours to replace.
      if (lockOwner(file) === pid) {
        fs.rmSync(file, { force: true });
        if (createExclusive(file, me)) {
          note = `taking over a stale run.lock left by process ${pid}, which is no longer running`;
          break;
        }
      }
    } finally {
      fs.rmSync(guard, { force: true });
    }
  }
  if (fresh) {
    const others = fs.readdirSync(dir).filter((f) => f !== FILES.lock);
    if (others.length) {
      releaseLock(dir);
      throw new UsageError(`run folder '${dir}' was filled by another process (${others.slice(0, 3).join(', ')}) while this run was being prepared. Choose another --run-dir.`);
    }
  }
  return note;
}

/** Remove the run's lock if this process holds it. */
export function releaseLock(dir: string): void {
  const file = path.join(dir, FILES.lock);
  if (lockOwner(file) === process.pid) fs.rmSync(file, { force: true });
}
