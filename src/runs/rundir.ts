import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../util/errors';
import { claimNewDir, isNonEmptyDir, readJson, sanitizeName, writeFileAtomic, writeJsonAtomic } from '../util/fsx';
import { LOCK_DIR, LOCK_FILE, LOCK_INFO_FILE } from './runlock';

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
  /** The PID of the process running it (decimal, newline); absent once the run ended (runlock.ts). */
  lock: LOCK_FILE,
  /** The run's lock: a folder whose mtime its holder refreshes (the heartbeat that alone decides whether it lives). */
  lockDir: LOCK_DIR,
  /** Beside run.lock: host, pid and start time of its holder, for messages only. */
  lockInfo: LOCK_INFO_FILE,
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

// The run's lock: a heartbeat lock (runlock.ts); these are its entry points.
export { acquireLock, isAlive, lockStatus, releaseLock } from './runlock';
