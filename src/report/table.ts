import * as fs from 'node:fs';
import * as path from 'node:path';
import { keyValue, levelLabel, metricValue, RunRecord } from './runs';
import * as rd from '../runs/rundir';

/** Mean, sample standard deviation (n − 1; NaN for one value) and count. */
export interface Stat {
  mean: number;
  std: number;
  n: number;
}

export function stat(values: readonly number[]): Stat {
  const n = values.length;
  if (!n) return { mean: NaN, std: NaN, n: 0 };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1)) : NaN;
  return { mean, std, n };
}

/** A value as a grouping label: strings as they are, anything else as JSON. */
export function label(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

export interface Group {
  /** Labels of the grouping keys, in key order. */
  values: string[];
  runs: RunRecord[];
}

/**
 * Order for the values of one key: numbers numerically; label levels from the
 * finest (most classes) to the coarsest, `scratch` last; otherwise by name.
 */
export function valueOrder(runs: readonly RunRecord[]): (a: string, b: string) => number {
  const classes = new Map<string, number>(hierarchyLevels(runs.find((r) => fs.existsSync(path.join(r.dir, rd.FILES.hierarchy)))?.dir));
  for (const r of runs) {
    const n = r.summary?.num_classes;
    if (typeof n !== 'number') continue;
    for (const k of [r.summary?.level, r.summary?.level_spec, r.config['train.level']]) if (typeof k === 'string') classes.set(k, n);
  }
  // `superclass (2)`: a level with its class count (the level column).
  const counted = (v: string) => /\((\d+)\)$/.exec(v)?.[1];
  return (a, b) => {
    const [pa, pb] = [counted(a), counted(b)];
    if (pa !== undefined && pb !== undefined && pa !== pb) return Number(pb) - Number(pa);
    const na = Number(a);
    const nb = Number(b);
    if (a.trim() !== '' && b.trim() !== '' && Number.isFinite(na) && Number.isFinite(nb)) return na - nb;
    if ((a === 'scratch') !== (b === 'scratch')) return a === 'scratch' ? 1 : -1;
    const ca = classes.get(a);
    const cb = classes.get(b);
    if (ca !== undefined && cb !== undefined && ca !== cb) return cb - ca;
    return a < b ? -1 : a > b ? 1 : 0;
  };
}

const levelCache = new Map<string, Array<[string, number]>>();

/** Level name → class count from a run's hierarchy.json (every level of its data, not only the one it trained). */
function hierarchyLevels(dir: string | undefined): Array<[string, number]> {
  if (!dir) return [];
  if (!levelCache.has(dir)) {
    let levels: Array<[string, number]> = [];
    try {
      const h = JSON.parse(fs.readFileSync(path.join(dir, rd.FILES.hierarchy), 'utf8')) as { levels?: Array<{ name: string; classes: unknown[] }> };
      levels = (h.levels ?? []).map((l) => [l.name, l.classes.length]);
      // The spellings a level is asked for by: leaf (finest), top/coarse, depth:N (levels listed coarsest first).
      const counts = levels.map(([, n]) => n);
      if (counts.length) levels.push(['leaf', Math.max(...counts)], ['top', Math.min(...counts.filter((n) => n > 1))], ['coarse', Math.min(...counts.filter((n) => n > 1))]);
      counts.forEach((n, i) => levels.push([`depth${i + 1}`, n], [`depth:${i + 1}`, n]));
    } catch {
      levels = [];
    }
    levelCache.set(dir, levels);
  }
  return levelCache.get(dir)!;
}

export function groupRuns(runs: readonly RunRecord[], keys: readonly string[]): Group[] {
  const map = new Map<string, Group>();
  for (const r of runs) {
    const values = keys.map((k) => label(keyValue(r, k)));
    const id = JSON.stringify(values);
    if (!map.has(id)) map.set(id, { values, runs: [] });
    map.get(id)!.runs.push(r);
  }
  const cmp = valueOrder(runs);
  return [...map.values()].sort((a, b) => {
    for (let i = 0; i < keys.length; i++) {
      const c = cmp(a.values[i], b.values[i]);
      if (c) return c;
    }
    return 0;
  });
}

export function groupStats(g: Group, metrics: readonly string[]): Stat[] {
  return metrics.map((m) => stat(g.runs.map((r) => metricValue(r.summary, m)).filter((v): v is number => v !== undefined)));
}

export function fmt(v: number): string {
  if (!Number.isFinite(v)) return '–';
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(4);
}

/** The level(s) a group's runs trained at, with class counts: `superclass (2)`. */
export function groupLevel(g: Group): string {
  const labels = [...new Set(g.runs.map((r) => levelLabel(r) ?? '–'))];
  return labels.join(', ');
}

/** A cell: mean ± std over the group's runs, (n=k) where only k of them have the metric. */
export function statCell(s: Stat, groupSize: number): string {
  return s.n === 0 ? '–' : `${fmt(s.mean)}${s.n > 1 ? ` ± ${fmt(s.std)}` : ''}${s.n !== groupSize ? ` (n=${s.n})` : ''}`;
}

/** Header names of the grouping keys as tables show them. */
export const keyHeader = (k: string) => (k === 'level_classes' ? 'level (classes)' : k);

/**
 * The rows of the group table: the grouping keys' values, the level the runs
 * trained at with its class count (accuracies are comparable only at one
 * level), n, a mean ± std cell per metric, and with `flags` a last column
 * `flags` holding each row's fair-comparison flags (report/flags.ts) when any
 * row has one.
 */
export function groupTable(groups: readonly Group[], keys: readonly string[], metrics: readonly string[], flags?: (g: Group) => string[]): { head: string[]; rows: string[][] } {
  const shown = keys.filter((k) => k !== 'level_classes');
  // Runs that record no level (made by hand, or very old) get no level column.
  const levels = groups.some((g) => g.runs.some((r) => levelLabel(r) !== undefined));
  const rowFlags = groups.map((g) => flags?.(g) ?? []);
  const withFlags = rowFlags.some((f) => f.length);
  const head = [...shown.map(keyHeader), ...(levels ? ['level (classes)'] : []), 'n', ...metrics, ...(withFlags ? ['flags'] : [])];
  const rows = groups.map((g, i) => {
    const stats = groupStats(g, metrics);
    return [
      ...g.values.filter((_, j) => keys[j] !== 'level_classes'),
      ...(levels ? [groupLevel(g)] : []),
      String(g.runs.length),
      ...stats.map((s) => statCell(s, g.runs.length)),
      ...(withFlags ? [rowFlags[i].length ? `⚠ ${rowFlags[i].join('; ')}` : ''] : []),
    ];
  });
  return { head, rows };
}

/** One markdown table: a row per group, mean ± std over its runs, n per cell (and the flags column, see groupTable). */
export function markdownTable(groups: readonly Group[], keys: readonly string[], metrics: readonly string[], flags?: (g: Group) => string[]): string {
  const t = groupTable(groups, keys, metrics, flags);
  const head = t.head;
  const rows = t.rows.map((r) => r.map((v) => v.replace(/\|/g, '\\|')));
  const widths = head.map((h, i) => Math.max(h.length, 3, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(head), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.map(line)].join('\n');
}

/**
 * A number without binary float noise: 12 significant digits, then the
 * shortest text (0.019000000000000017 → 0.019); a float64 mean or a metric
 * carries fewer true digits than that.
 */
export function cleanNumber(v: number): string {
  return String(Number(v.toPrecision(12)));
}

function csvCell(v: unknown): string {
  const s = v === undefined || v === null || (typeof v === 'number' && !Number.isFinite(v)) ? '' : typeof v === 'string' ? v : typeof v === 'number' ? cleanNumber(v) : typeof v === 'boolean' ? String(v) : JSON.stringify(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csv(rows: ReadonlyArray<readonly unknown[]>): string {
  return rows.map((r) => r.map(csvCell).join(',')).join('\n') + '\n';
}

/** summary.csv: a row per group with `<metric>_mean`, `<metric>_std`, `<metric>_n`. */
export function groupsCsv(groups: readonly Group[], keys: readonly string[], metrics: readonly string[]): string {
  const head = [...keys, 'n', ...metrics.flatMap((m) => [`${m}_mean`, `${m}_std`, `${m}_n`]), 'level', 'num_classes'];
  const one = (g: Group, k: string) => [...new Set(g.runs.map((r) => r.summary?.[k]))].map((v) => (v === undefined ? '' : String(v))).join(' ');
  return csv([head, ...groups.map((g) => [...g.values, g.runs.length, ...groupStats(g, metrics).flatMap((s) => [s.mean, s.std, s.n]), one(g, 'level'), one(g, 'num_classes')])]);
}

/**
 * runs.csv: a row per run: its folder and status, the seed, every grouping
 * key (those asked for, the splits added, and stage, pretrain_level, level,
 * regime), every config key whose value differs between the runs, and every
 * metric; numbers without float noise (cleanNumber).
 */
export function runsCsv(runs: readonly RunRecord[], keys: readonly string[], metrics: readonly string[]): string {
  const varying = Object.keys(runs[0]?.config ?? {}).filter((k) => new Set(runs.map((r) => JSON.stringify(keyValue(r, k)))).size > 1);
  const extra = [...new Set(['seed', 'stage', 'pretrain_level', 'level', 'num_classes', 'regime', ...varying])].filter((k) => !keys.includes(k) && !metrics.includes(k));
  const head = ['run', 'status', ...keys, ...metrics, ...extra];
  return csv([head, ...runs.map((r) => [r.dir, r.summary?.status ?? 'no summary', ...keys.map((k) => keyValue(r, k)), ...metrics.map((m) => metricValue(r.summary, m)), ...extra.map((k) => keyValue(r, k))])]);
}
