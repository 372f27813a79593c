import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { findRunDirs, readRun, RunRecord } from '../report/runs';
import { exitQuietlyOnEpipe } from '../util/stdout';
import { runState } from '../sweep/run';
import { FILES } from '../runs/rundir';
import { UsageError } from '../util/errors';
import { action } from './common';
import { formatTable } from './hierarchy';

/** One run folder as `granular runs` lists it. */
export interface RunLine {
  dir: string;
  /** completed | failed | interrupted | running (run.lock.d with a fresh heartbeat; run.lock holds its PID) | crashed (no summary, no live lock) */
  status: string;
  stage: string | null;
  level: string | null;
  num_classes: number | null;
  /** finetune.freeze (`0`, `2`, `all`), `+ gradual` with an unfreezing schedule; null for pretraining. */
  freeze: string | null;
  test_acc: number | null;
  /** When the run started (run.json), ISO time. */
  started: string | null;
  /** Seconds since the run last wrote (summary.json when it ended, metrics.jsonl while it runs). */
  age_seconds: number | null;
}

function mtime(file: string): number | null {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return null;
  }
}

/** The level a run trains at and its class count from hierarchy.json (written before training): for runs without a summary yet. */
function trainedLevel(dir: string): { level: string | null; num_classes: number | null } {
  try {
    const h = JSON.parse(fs.readFileSync(path.join(dir, FILES.hierarchy), 'utf8')) as { trained_level?: unknown; levels?: Array<{ name?: unknown; classes?: unknown[] }> };
    const level = typeof h.trained_level === 'string' ? h.trained_level : null;
    const classes = h.levels?.find((l) => l.name === level)?.classes;
    return { level, num_classes: Array.isArray(classes) ? classes.length : null };
  } catch {
    return { level: null, num_classes: null };
  }
}

export function runLine(r: RunRecord, now = Date.now()): RunLine {
  const s = r.summary ?? {};
  const fromHierarchy = typeof s.level === 'string' && typeof s.num_classes === 'number' ? null : trainedLevel(r.dir);
  const stage = (s.stage ?? r.meta.stage ?? null) as string | null;
  let freeze: string | null = null;
  if (stage === 'finetune') {
    freeze = String(r.config['finetune.freeze'] ?? 0);
    if (r.config['finetune.unfreeze.every'] !== undefined && r.config['finetune.unfreeze.every'] !== null) freeze += ' + gradual';
  }
  const last = mtime(path.join(r.dir, FILES.summary)) ?? mtime(path.join(r.dir, FILES.metrics)) ?? mtime(path.join(r.dir, FILES.config));
  return {
    dir: r.dir,
    status: runState(r.dir),
    stage,
    level: typeof s.level === 'string' ? s.level : (fromHierarchy?.level ?? null),
    num_classes: typeof s.num_classes === 'number' ? s.num_classes : (fromHierarchy?.num_classes ?? null),
    freeze,
    test_acc: typeof s.test_acc === 'number' ? s.test_acc : null,
    started: typeof r.meta.created === 'string' ? r.meta.created : null,
    age_seconds: last === null ? null : Math.max(0, Math.round((now - last) / 1000)),
  };
}

/** `42 s`, `7 min`, `3 h`, `12 d`. */
export function age(seconds: number | null): string {
  if (seconds === null) return '–';
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

export function runsCommand(): Command {
  return new Command('runs')
    .description('list the run folders below DIR (default runs/): status, stage, level, classes, freeze, test_acc, age')
    .argument('[dir...]', 'folders that hold runs (or run folders)', ['runs'])
    .option('--json', 'machine-readable output (a JSON array)', false)
    .addHelpText(
      'after',
      `
status: completed, failed, interrupted (resume it), running (a live process holds the run's lock: the heartbeat of run.lock.d is fresh; run.lock holds its PID),
crashed (no summary.json and no live process: resume it). age: since the run last wrote.
Oldest first, so the newest run is next to the prompt.

  granular runs
  granular runs runs/label-granularity --json | jq '.[] | select(.status != "completed") | .dir'`,
    )
    .action(
      action(async (dirs: string[], o: Record<string, unknown>) => {
        exitQuietlyOnEpipe();
        if (dirs.length === 1 && dirs[0] === 'runs' && !fs.existsSync('runs')) {
          process.stdout.write(`no runs yet: there is no runs/ folder here (pretrain and finetune write to runs/<stage>-<name>-<time>/ unless --run-dir says otherwise)\n`);
          return 0;
        }
        for (const d of dirs) {
          if (!fs.existsSync(d)) throw new UsageError(`'${d}' does not exist. Give a folder that holds run folders (runs go to runs/ by default; --run-dir puts them elsewhere).`);
        }
        const lines = findRunDirs(dirs)
          .map((d) => runLine(readRun(d)))
          .sort((a, b) => (a.started ?? '').localeCompare(b.started ?? '') || a.dir.localeCompare(b.dir));
        if (o.json) {
          process.stdout.write(JSON.stringify(lines, null, 2) + '\n');
          return 0;
        }
        if (!lines.length) {
          process.stdout.write(`no run folders below ${dirs.join(', ')}\n`);
          return 0;
        }
        const base = dirs.length === 1 ? dirs[0] : '.';
        const rows = [['run', 'status', 'stage', 'level', 'classes', 'freeze', 'test_acc', 'age']];
        for (const l of lines) {
          const name = path.relative(base, l.dir) || l.dir;
          rows.push([name, l.status, l.stage ?? '–', l.level ?? '–', l.num_classes === null ? '–' : String(l.num_classes), l.freeze ?? '–', l.test_acc === null ? '–' : l.test_acc.toFixed(4), age(l.age_seconds)]);
        }
        process.stdout.write(formatTable(rows) + '\n');
        const counts = new Map<string, number>();
        for (const l of lines) counts.set(l.status, (counts.get(l.status) ?? 0) + 1);
        process.stdout.write(`${lines.length} runs: ${[...counts].map(([k, n]) => `${n} ${k}`).join(', ')}\n`);
        return 0;
      }),
    );
}

