import * as path from 'node:path';
import sharp from 'sharp';
import { UsageError } from '../util/errors';
import { ensureDir, writeFileAtomic } from '../util/fsx';
import { curveChart, dynamicsMeasures, fileSafe, metricVsKey } from './plots';
import { checkKey, findRunDirs, keyValue, metricValue, readRun, RunRecord } from './runs';
import { Chart, renderChart } from './svg';
import { groupRuns, groupsCsv, label, markdownTable, runsCsv } from './table';
import { flagNotes, rowFlags, sourceBudgets } from './flags';

export interface ReportOptions {
  dirs: string[];
  groupBy: string[];
  metrics: string[];
  /** Keep only runs whose key has this value (`stage=finetune`). */
  where?: string[];
  /** A source run whose train_acc_final is below this is flagged underfit (default 0.8). */
  underfitBelow?: number;
  x?: string;
  out: string;
  png: boolean;
}

export interface ReportResult {
  table: string;
  groupBy: string[];
  metrics: string[];
  runs: RunRecord[];
  excluded: RunRecord[];
  files: string[];
  /** Fair-comparison notes (report/flags.ts), one paragraph each; empty when no flag is raised. */
  notes: string[];
}

const DEFAULT_METRICS = ['test_acc', 'test_acc_easy', 'test_acc_hard', 'val_acc'];
const SEED_KEYS = new Set(['seed', 'data.seed', 'train.seed', 'name']);

/**
 * Keys to group by when none are given: stage and pretraining level, then every
 * config key that still splits the runs further (seeds excepted: runs that
 * differ only in seed are the repetitions a cell averages over).
 */
export function defaultGroupBy(runs: readonly RunRecord[]): string[] {
  const keys: string[] = [];
  const candidates = ['stage', 'pretrain_level', ...Object.keys(runs[0]?.config ?? {}).filter((k) => !SEED_KEYS.has(k))];
  let groups = groupRuns(runs, keys).length;
  for (const k of candidates) {
    if (runs.some((r) => keyValue(r, k) === undefined)) continue;
    const n = groupRuns(runs, [...keys, k]).length;
    if (n > groups) {
      keys.push(k);
      groups = n;
    }
  }
  return keys;
}

/** Read the runs, group them, write summary.csv, runs.csv, report.md and the plots. */
export async function makeReport(o: ReportOptions): Promise<ReportResult> {
  const dirs = findRunDirs(o.dirs);
  if (!dirs.length) throw new UsageError(`no run folders (folders with config.yaml) below ${o.dirs.map((d) => `'${d}'`).join(', ')}. Point report at runs/<sweep-name> or at run folders.`);
  let all = dirs.map(readRun);
  for (const w of o.where ?? []) {
    const eq = w.indexOf('=');
    if (eq <= 0) throw new UsageError(`--where '${w}' must look like key=value, e.g. --where stage=finetune.`);
    const [key, value] = [w.slice(0, eq), w.slice(eq + 1)];
    checkKey(all.filter((r) => r.summary?.status === 'completed'), key, '--where');
    all = all.filter((r) => label(keyValue(r, key)) === value);
    if (!all.length) throw new UsageError(`--where '${w}' keeps no run.`);
  }
  const runs = all.filter((r) => r.summary?.status === 'completed');
  const excluded = all.filter((r) => r.summary?.status !== 'completed');
  if (!runs.length) throw new UsageError(`none of the ${all.length} run folders below ${o.dirs.join(', ')} has completed (statuses: ${[...new Set(all.map((r) => String(r.summary?.status ?? 'no summary.json')))].join(', ')}).`);

  for (const k of o.groupBy) checkKey(runs, k, '--group-by');
  const groupBy = o.groupBy.length ? o.groupBy : defaultGroupBy(runs);
  let metrics = o.metrics;
  if (!metrics.length) metrics = DEFAULT_METRICS.filter((m) => runs.some((r) => metricValue(r.summary, m) !== undefined));
  for (const m of metrics) {
    if (!runs.some((r) => metricValue(r.summary, m) !== undefined)) {
      const have = [...new Set(runs.flatMap((r) => Object.keys(r.summary ?? {}).filter((k) => typeof r.summary![k] === 'number')))];
      throw new UsageError(`--metric '${m}' is in no run's summary.json. Numeric summary keys: ${have.slice(0, 20).join(', ')}${have.length > 20 ? ', ...' : ''}.`);
    }
  }
  if (!metrics.length) throw new UsageError('the runs have none of the default metrics (test_acc, ...); name some with --metric.');
  const xKey = o.x ?? groupBy.find((k) => k !== 'stage') ?? groupBy[0];
  if (xKey) checkKey(runs, xKey, '--x');

  const groups = groupRuns(runs, groupBy);
  const flagOpts = { underfitBelow: o.underfitBelow ?? 0.8 };
  const budgetsDiffer = sourceBudgets(runs).length > 1;
  const table = markdownTable(groups, groupBy, metrics, (g) => rowFlags(g, flagOpts, budgetsDiffer));
  const notes = flagNotes(groups, flagOpts);
  ensureDir(o.out);
  const files: string[] = [];
  const write = (name: string, text: string) => {
    const f = path.join(o.out, name);
    writeFileAtomic(f, text);
    files.push(f);
    return f;
  };
  write('summary.csv', groupsCsv(groups, groupBy, metrics));
  write('runs.csv', runsCsv(runs, groupBy, metrics));

  const charts: Array<[string, Chart]> = [];
  for (const m of metrics) {
    if (xKey) {
      const c = metricVsKey(runs, groupBy, xKey, m);
      if (c) charts.push([`${fileSafe(m)}-vs-${fileSafe(xKey)}`, c]);
    }
    const e = curveChart(runs, groupBy, m, 'epoch', 'epoch');
    if (e) charts.push([`${fileSafe(m)}-vs-epoch`, e]);
  }
  for (const d of dynamicsMeasures(runs)) {
    const c = curveChart(runs, groupBy, d, 'dynamics', 'step');
    if (c) charts.push([`dynamics-${fileSafe(d)}-vs-step`, c]);
  }
  const plotNames: string[] = [];
  for (const [name, chart] of charts) {
    const svg = renderChart(chart);
    const svgFile = write(`${name}.svg`, svg);
    if (o.png) {
      const pngFile = svgFile.replace(/\.svg$/, '.png');
      await sharp(Buffer.from(svg), { density: 144 }).png().toFile(pngFile);
      files.push(pngFile);
    }
    plotNames.push(name);
  }

  const md = [
    `# Report`,
    '',
    `${runs.length} completed runs from ${o.dirs.join(', ')}; grouped by ${groupBy.length ? groupBy.join(', ') : '(nothing)'}.`,
    'Cells: mean ± sample standard deviation over the runs of the group (n).',
    ...(excluded.length ? ['', `Not included (not completed): ${excluded.map((r) => `${r.dir} (${String(r.summary?.status ?? 'no summary.json')})`).join(', ')}.`] : []),
    '',
    table,
    '',
    ...notes.flatMap((n) => [n, '']),
    ...plotNames.map((n) => `![${n}](${n}.${o.png ? 'png' : 'svg'})`),
    '',
  ].join('\n');
  write('report.md', md);
  return { table, groupBy, metrics, runs, excluded, files, notes };
}

