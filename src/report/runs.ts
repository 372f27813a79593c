import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { readRunFolder } from '../runs/run';
import * as rd from '../runs/rundir';
import { nearest, UsageError } from '../util/errors';

/** One run folder as a report reads it: files only, never logs. */
export interface RunRecord {
  dir: string;
  /** config.yaml flattened to dotted keys (`train.level`). */
  config: Record<string, unknown>;
  /** summary.json (final values), or null while running / after a crash. */
  summary: Record<string, unknown> | null;
  meta: Record<string, unknown>;
  /** metrics.jsonl rows. */
  rows: Array<Record<string, unknown>>;
  /** The source run's config.yaml, flattened (fine-tuning runs with `from`); null otherwise or when unreadable. */
  source: Record<string, unknown> | null;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function flattenObj(o: Record<string, unknown>, prefix = '', out: Record<string, unknown> = {}): Record<string, unknown> {
  for (const [k, v] of Object.entries(o)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isObj(v)) flattenObj(v, key, out);
    else out[key] = v;
  }
  return out;
}

/** Run folders (those holding config.yaml) at or below each folder, in sorted order. */
function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export function findRunDirs(roots: readonly string[]): string[] {
  const out: string[] = [];
  // Linked folders are followed; a link back up the tree is walked once.
  const visited = new Set<string>();
  const walk = (dir: string) => {
    let real: string;
    try {
      real = fs.realpathSync(dir);
    } catch {
      return;
    }
    if (visited.has(real)) return;
    visited.add(real);
    if (fs.existsSync(path.join(dir, rd.FILES.config))) {
      out.push(dir); // a run's own subfolders (model/, checkpoint/, eval/) are not runs
      return;
    }
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      if (e.name.startsWith('.') || e.name === 'node_modules') continue;
      if (e.isDirectory() || (e.isSymbolicLink() && isDir(path.join(dir, e.name)))) walk(path.join(dir, e.name));
    }
  };
  for (const r of roots) {
    if (!fs.existsSync(r)) throw new UsageError(`'${r}' does not exist. Give run folders, or folders that hold them (e.g. runs/<sweep-name>).`);
    if (!fs.statSync(r).isDirectory()) throw new UsageError(`'${r}' is not a folder. Give run folders, or folders that hold them.`);
    walk(r);
  }
  return [...new Set(out)];
}

export function readRun(dir: string): RunRecord {
  const cfgFile = path.join(dir, rd.FILES.config);
  const run = readRunFolder(dir);
  let config: Record<string, unknown>;
  try {
    if (run.configText === null) throw new Error('cannot be read');
    const parsed = YAML.parse(run.configText);
    config = isObj(parsed) ? flattenObj(parsed) : {};
  } catch (e) {
    throw new UsageError(`'${cfgFile}' is not valid YAML (${(e as Error).message.split('\n')[0]}).`);
  }
  const meta: Record<string, unknown> = { ...run.meta };
  const stage = sweepStage(dir);
  if (stage !== undefined) meta.sweep_stage = stage;
  return { dir, config, summary: run.summary, meta, rows: rd.readMetrics(dir), source: sourceConfig(dir, meta.from) };
}

function sourceConfig(dir: string, from: unknown): Record<string, unknown> | null {
  if (typeof from !== 'string') return null;
  try {
    const parsed = YAML.parse(readRunFolder(path.resolve(dir, from)).configText ?? '');
    return isObj(parsed) ? flattenObj(parsed) : null;
  } catch {
    return null;
  }
}

/** The sweep stage (its key under `stages:`) a run folder was made by, from the sweep.json beside it. */
function sweepStage(dir: string): string | undefined {
  try {
    const sweep = JSON.parse(fs.readFileSync(path.join(path.dirname(dir), rd.FILES.sweep), 'utf8'));
    const stage = sweep?.runs?.[path.basename(dir)]?.stage;
    return typeof stage === 'string' ? stage : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The value of a grouping or x-axis key for a run: a config key (`train.level`,
 * `finetune.freeze`), else a summary key (`pretrain_level`, `frozen_blocks`,
 * `trainable_params`), else a run.json key, or `sweep_stage` (the stage
 * of the sweep file that made the run, for runs inside a sweep's folder), or
 * `source.<config key>`: the value in the config of the run a fine-tuning run
 * started from (`source.data.relabel`, `source.train.epochs`); `scratch` for
 * fine-tuning runs without a source.
 */
export function keyValue(run: RunRecord, key: string): unknown {
  if (key === 'regime') return regime(run);
  if (key === 'level_classes') return levelLabel(run);
  if (key.startsWith('source.')) {
    if (run.source) return run.source[key.slice('source.'.length)];
    return run.meta.stage === 'finetune' && run.meta.from === null ? 'scratch' : undefined;
  }
  if (key in run.config) return run.config[key];
  if (run.summary && key in run.summary) return run.summary[key];
  if (key in run.meta) return run.meta[key];
  return undefined;
}

/**
 * How a run trained its blocks, as one label: `pretrain`, `full` (freeze 0),
 * `linear probe` (freeze all), `freeze N`, or `gradual (...)` for a gradual-
 * unfreezing schedule, which starts frozen and opens blocks as it goes, so it
 * is neither `freeze 0` nor `freeze N`.
 */
export function regime(run: RunRecord): string | undefined {
  const stage = run.summary?.stage ?? run.meta.stage;
  if (stage === 'pretrain') return 'pretrain';
  if (stage !== 'finetune') return undefined;
  const freeze = run.config['finetune.freeze'] ?? 0;
  const every = run.config['finetune.unfreeze.every'];
  if (every !== undefined && every !== null) {
    const unit = run.config['finetune.unfreeze.unit'] ?? 'epoch';
    const order = run.config['finetune.unfreeze.order'] ?? 'top-down';
    const stop = Object.entries(run.config).filter(([k]) => k.startsWith('finetune.unfreeze.stop.')).map(([k, v]) => `${k.slice('finetune.unfreeze.stop.'.length)} ${v}`);
    const parts = [`every ${every} ${unit}${every === 1 ? '' : 's'}`, String(order), ...(freeze !== 0 ? [`freeze ${freeze}`] : []), ...(stop.length ? [`stop ${stop.filter((x) => !x.startsWith('when ')).join(' ')}`] : [])];
    return `gradual (${parts.join(', ')})`;
  }
  if (freeze === 'all') return 'linear probe';
  return freeze === 0 ? 'full' : `freeze ${freeze}`;
}

/** The trained level with its class count, `superclass (2)`: what makes two accuracies comparable. */
export function levelLabel(run: RunRecord): string | undefined {
  const level = run.summary?.level;
  if (typeof level !== 'string') return undefined;
  const n = run.summary?.num_classes;
  return typeof n === 'number' ? `${level} (${n})` : level;
}

/** Every key a run can be grouped by, for "did you mean" hints. */
export function knownKeys(runs: readonly RunRecord[]): string[] {
  const s = new Set<string>();
  for (const r of runs) {
    Object.keys(r.config).forEach((k) => s.add(k));
    Object.keys(r.summary ?? {}).forEach((k) => s.add(k));
    Object.keys(r.meta).forEach((k) => s.add(k));
    Object.keys(r.source ?? {}).forEach((k) => s.add(`source.${k}`));
  }
  return [...s, 'regime', 'level_classes'];
}

/** Refuse a key some runs lack, naming those runs. */
export function checkKey(runs: readonly RunRecord[], key: string, what: string): void {
  const lacking = runs.filter((r) => keyValue(r, key) === undefined);
  if (!lacking.length) return;
  if (lacking.length === runs.length) {
    const hint = nearest(key, knownKeys(runs));
    throw new UsageError(`${what} '${key}' is not a config or summary key of any run.${hint ? ` Did you mean '${hint}'?` : ''}`);
  }
  const names = lacking.slice(0, 3).map((r) => r.dir).join(', ');
  throw new UsageError(`${what} '${key}': ${lacking.length} of ${runs.length} runs lack it (${names}${lacking.length > 3 ? ', ...' : ''}). Report those folders separately or group by another key.`);
}

/**
 * A metric value from a record (summary.json or a metrics row).
 * `<m>_error`/`<m>_err` is derived as 1 − `<m>_acc` when not stored, and
 * `<m>@<level>` of a run trained at `<level>` is its `<m>` (a run's own level
 * is scored without summing: DESIGN.md "Scoring at coarser levels"). `level`
 * is the run's trained level; a summary says it itself.
 */
export function metricValue(rec: Record<string, unknown> | null | undefined, metric: string, level?: unknown): number | undefined {
  if (!rec) return undefined;
  const v = rec[metric];
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  // A yes/no fact (converged) counts 1 or 0, so a cell's mean is the share of runs where it holds.
  if (typeof v === 'boolean') return v ? 1 : 0;
  const at = metric.lastIndexOf('@');
  const own = level ?? rec.level;
  if (at > 0 && typeof own === 'string' && metric.slice(at + 1) === own) return metricValue(rec, metric.slice(0, at), own);
  const m = /^(.*)_(error|err)(@.*)?$/.exec(metric);
  if (m) {
    const acc = metricValue(rec, `${m[1]}_acc${m[3] ?? ''}`, level);
    if (acc !== undefined) return 1 - acc;
  }
  return undefined;
}
