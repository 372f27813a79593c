import * as path from 'node:path';
import sharp from 'sharp';
import { nearest, UsageError } from '../util/errors';
import { ensureDir, writeFileAtomic } from '../util/fsx';
import { curveChart, dynamicsMeasures, fileSafe, metricVsKey } from './plots';
import { renderHtml, runHref } from './html';
import { checkKey, findRunDirs, keyValue, levelLabel, metricValue, readRun, regime, RunRecord } from './runs';
import { Chart, renderChart } from './svg';
import { groupRuns, groupsCsv, groupTable, keyHeader, label, markdownTable, runsCsv } from './table';
import { flagNotes, rowFlags, sourceBudgets } from './flags';
import { formatTable, TableFormat } from './formats';

export interface ReportOptions {
  /** Called with the completed runs before anything is written: a UsageError it throws leaves no file behind (--compare's checks). */
  check?: (runs: RunRecord[]) => void;
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
  /** Also write index.html (tables, inline plots, links to the runs). */
  html?: boolean;
  /** The level every run is scored at in the `test_acc@<level>` column; default: see targetLevel. */
  targetLevel?: string;
  /** Also write the group table paste-ready (report/formats.ts): table.tex, table.md or table.csv. */
  format?: TableFormat;
  /** Decimals of the percentages in `format` (default 1). */
  digits?: number;
}

export interface ReportResult {
  table: string;
  groupBy: string[];
  metrics: string[];
  runs: RunRecord[];
  excluded: RunRecord[];
  files: string[];
  /** The level of the comparable accuracy column, when the runs trained at more than one level. */
  targetLevel: string | null;
  /** Fair-comparison notes (report/flags.ts), one paragraph each; empty when no flag is raised. */
  notes: string[];
  /** The group table in `format`, when one was asked for. */
  formatted: string | null;
}

const DEFAULT_METRICS = ['test_acc', 'test_acc_easy', 'test_acc_hard', 'val_acc'];
const SEED_KEYS = new Set(['seed', 'data.seed', 'train.seed', 'name']);
/** Where files go, not what is computed: never an experiment variable (the same config started from two folders). */
const PLACE_KEYS = new Set(['data.cache_dir']);

/**
 * Keys to group by when none are given: stage and pretraining level, then every
 * config key that still splits the runs further (seeds excepted: runs that
 * differ only in seed are the repetitions a cell averages over).
 */
export function defaultGroupBy(runs: readonly RunRecord[]): string[] {
  const keys: string[] = [];
  // `regime` says full / linear probe / freeze N / gradual (...): finetune.freeze alone calls a gradual run `0`.
  const candidates = ['stage', 'pretrain_level', 'regime', ...Object.keys(runs[0]?.config ?? {}).filter((k) => !SEED_KEYS.has(k) && !PLACE_KEYS.has(k) && k !== 'finetune.freeze' && !k.startsWith('finetune.unfreeze'))];
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

/**
 * The level at which every run of a report can be scored, so one column
 * compares them all: the level the fine-tuning runs trained at (a sweep's
 * target) when they agree, else the coarsest level any run trained at. A run
 * trained finer is scored there by summing probabilities (`test_acc@<level>`);
 * a run trained at it by its own `test_acc`.
 */
export function targetLevel(runs: readonly RunRecord[]): string | null {
  const levels = (rs: readonly RunRecord[]) => [...new Set(rs.map((r) => r.summary?.level).filter((l): l is string => typeof l === 'string'))];
  const all = levels(runs);
  if (all.length < 2) return null;
  const ft = levels(runs.filter((r) => r.summary?.stage === 'finetune'));
  if (ft.length === 1) return ft[0];
  const classes = (l: string) => Math.min(...runs.filter((r) => r.summary?.level === l).map((r) => Number(r.summary?.num_classes ?? Infinity)));
  return all.reduce((a, b) => (classes(b) < classes(a) ? b : a));
}

/** Whether some group holds runs with different values of `key`. */
function mixes(runs: readonly RunRecord[], groupBy: readonly string[], value: (r: RunRecord) => unknown): boolean {
  return groupRuns(runs, groupBy).some((g) => new Set(g.runs.map(value)).size > 1);
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
  o.check?.(runs);

  for (const k of o.groupBy) checkKey(runs, k, '--group-by');
  let groupBy = o.groupBy.length ? o.groupBy : defaultGroupBy(runs);
  // The x axis of the metric-vs-key plots is one of the keys asked for (or found), not a split added below.
  const xKey = o.x ?? groupBy.find((k) => k !== 'stage') ?? groupBy[0];
  // A row never averages accuracies of different levels, nor gradual unfreezing with a fixed freeze.
  const splits: string[] = [];
  // A pretraining run is not a fine-tuning run: pretrain and finetune runs at the same level (a `top` source and its
  // `top` fine-tunes) would otherwise share a mean because finetune.freeze defaults to 0 in both.
  if (!groupBy.includes('stage') && mixes(runs, groupBy, (r) => r.summary?.stage)) {
    groupBy = ['stage', ...groupBy];
    splits.push('the stage');
  }
  if (mixes(runs, groupBy, (r) => levelLabel(r))) {
    groupBy = [...groupBy, 'level_classes'];
    splits.push('the trained level');
  }
  if (groupBy.includes('finetune.freeze') && !groupBy.includes('regime') && mixes(runs, groupBy, (r) => regime(r)?.startsWith('gradual'))) {
    groupBy = [...groupBy, 'regime'];
    splits.push('regime (gradual unfreezing is not freeze 0)');
  }
  const target = o.targetLevel ?? targetLevel(runs);
  if (o.targetLevel !== undefined && !runs.some((r) => metricValue(r.summary, `test_acc@${o.targetLevel}`) !== undefined)) {
    const known = [...new Set(runs.flatMap((r) => [r.summary?.level, ...Object.keys(r.summary ?? {}).filter((k) => k.startsWith('test_acc@')).map((k) => k.slice(9))]))].filter(Boolean);
    throw new UsageError(`--target-level '${o.targetLevel}': no run trained at it or is scored at it. Levels in these runs: ${known.join(', ')}.`);
  }
  let metrics = o.metrics;
  if (!metrics.length) metrics = DEFAULT_METRICS.filter((m) => runs.some((r) => metricValue(r.summary, m) !== undefined));
  const targetMetric = target ? `test_acc@${target}` : null;
  if (targetMetric && !metrics.includes(targetMetric)) metrics = [targetMetric, ...metrics];
  for (const m of metrics) {
    if (!runs.some((r) => metricValue(r.summary, m) !== undefined)) {
      const have = [...new Set(runs.flatMap((r) => Object.keys(r.summary ?? {}).filter((k) => typeof r.summary![k] === 'number')))];
      const guess = nearest(m, [...have, ...have.filter((k) => k.endsWith('_acc')).map((k) => k.replace(/_acc$/, '_error'))]);
      throw new UsageError(`--metric '${m}' is in no run's summary.json.${guess ? ` Did you mean '${guess}'?` : ''} Numeric summary keys: ${have.slice(0, 20).join(', ')}${have.length > 20 ? ', ...' : ''}.`);
    }
  }
  if (!metrics.length) throw new UsageError('the runs have none of the default metrics (test_acc, ...); name some with --metric.');
  if (xKey) checkKey(runs, xKey, '--x');

  const groups = groupRuns(runs, groupBy);
  const flagOpts = { underfitBelow: o.underfitBelow ?? 0.8 };
  const budgetsDiffer = sourceBudgets(runs).length > 1;
  const table = markdownTable(groups, groupBy, metrics, (g) => rowFlags(g, flagOpts, budgetsDiffer));
  const flagText = flagNotes(groups, flagOpts);
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
  const formatted = o.format ? formatTable(o.format, groups, groupBy, metrics, o.digits ?? 1, (g) => rowFlags(g, flagOpts, budgetsDiffer)) : null;
  if (o.format && formatted !== null) write(`table.${{ latex: 'tex', markdown: 'md', csv: 'csv' }[o.format]}`, formatted);

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

  const notes = [
    `${runs.length} completed runs from ${o.dirs.join(', ')}; grouped by ${groupBy.length ? groupBy.map(keyHeader).join(', ') : '(nothing)'}.`,
    'Cells: mean ± sample standard deviation over the runs of the group (n).',
    ...(splits.length ? [`Rows are also split by ${splits.join(' and ')}, so no row averages runs that cannot be compared.`] : []),
    ...(targetMetric
      ? [`The runs trained at different levels; ${targetMetric} scores every run at ${target}: a run trained there by its test_acc, a finer one by summing its probabilities per ${target} class (– where a run trained coarser).`]
      : []),
  ];
  const md = [
    `# Report`,
    '',
    ...notes,
    ...(excluded.length ? ['', `Not included (not completed): ${excluded.map((r) => `${r.dir} (${String(r.summary?.status ?? 'no summary.json')})`).join(', ')}.`] : []),
    '',
    table,
    '',
    ...flagText.flatMap((n) => [n, '']),
    ...plotNames.map((n) => `![${n}](${n}.${o.png ? 'png' : 'svg'})`),
    '',
  ].join('\n');
  write('report.md', md);
  if (o.html) {
    // The same table as report.md: the flags column included.
    const gt = groupTable(groups, groupBy, metrics, (g) => rowFlags(g, flagOpts, budgetsDiffer));
    const shownKeys = groupBy.filter((k) => !['level_classes', 'stage', 'regime'].includes(k));
    const runRows = runs.map((r) => ({
      href: runHref(o.out, r.dir),
      cells: [path.basename(r.dir), String(r.summary?.stage ?? ''), levelLabel(r) ?? '–', regime(r) ?? '–', ...shownKeys.map((k) => label(keyValue(r, k))), ...metrics.map((m) => fmtRun(metricValue(r.summary, m)))],
    }));
    const html = renderHtml({
      title: `Report: ${o.dirs.join(', ')}`,
      notes: [...notes, ...flagText, 'Click a column heading to sort; each run links to its folder.', ...(excluded.length ? [`Not included (not completed): ${excluded.map((r) => r.dir).join(', ')}.`] : [])],
      tables: [
        { id: 'groups', caption: 'Groups', head: gt.head, rows: gt.rows.map((cells) => ({ cells })) },
        { id: 'runs', caption: 'Runs', head: ['run', 'stage', 'level (classes)', 'regime', ...shownKeys.map(keyHeader), ...metrics], rows: runRows },
      ],
      charts: charts.map(([name, chart]) => ({ name, svg: renderChart(chart) })),
    });
    write('index.html', html);
  }
  return { table, groupBy, metrics, runs, excluded, files, targetLevel: target, notes: flagText, formatted };
}

function fmtRun(v: number | undefined): string {
  return v === undefined ? '–' : Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(4);
}

