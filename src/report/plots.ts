import { keyValue, metricValue, RunRecord } from './runs';
import { Chart, Point, Series, wantsLogY } from './svg';
import { Group, groupRuns, keyHeader, stat, valueOrder } from './table';

/** A file-name-safe version of a metric or key (`test_acc@superclass` → `test_acc_at_superclass`). */
export function fileSafe(s: string): string {
  return s.replace(/@/g, '_at_').replace(/[:/\\]+/g, '').replace(/[^A-Za-z0-9._=-]+/g, '_');
}

/** Series are named by their values (`leaf / 0`); the legend's title names the keys (`pretrain_level / finetune.freeze`). */
export const seriesName = (keys: readonly string[], values: readonly string[]) => (keys.length ? values.join(' / ') : 'all runs');
const legendTitle = (keys: readonly string[]) => (keys.length ? keys.map(keyHeader).join(' / ') : undefined);

/**
 * A metric against a key (accuracy vs pretraining level, error vs trainable
 * parameters): one series per combination of the other grouping keys, mean ±
 * std over the runs of each cell. An x key that is not a grouping key is
 * averaged within each cell, so it must be numeric.
 */
export function metricVsKey(runs: readonly RunRecord[], groupKeys: readonly string[], xKey: string, metric: string): Chart | null {
  const seriesKeys = groupKeys.filter((k) => k !== xKey);
  const cells = groupRuns(runs, [...seriesKeys, ...(groupKeys.includes(xKey) ? [xKey] : [])]);
  const xIsGroup = groupKeys.includes(xKey);
  const xOf = (g: Group): number | string | undefined => {
    if (xIsGroup) return g.values[g.values.length - 1];
    const v = stat(g.runs.map((r) => Number(keyValue(r, xKey))).filter(Number.isFinite));
    return v.n ? v.mean : undefined;
  };
  const xs = cells.map(xOf).filter((x): x is number | string => x !== undefined);
  const numeric = xs.every((x) => typeof x === 'number' || (String(x).trim() !== '' && Number.isFinite(Number(x))));
  const series = new Map<string, Series>();
  for (const g of cells) {
    const x = xOf(g);
    const s = stat(g.runs.map((r) => metricValue(r.summary, metric)).filter((v): v is number => v !== undefined));
    if (x === undefined || !s.n) continue;
    const name = seriesName(seriesKeys, g.values.slice(0, seriesKeys.length));
    if (!series.has(name)) series.set(name, { name, points: [] });
    series.get(name)!.points.push({ x: numeric ? Number(x) : String(x), y: s.mean, err: s.std });
  }
  if (!series.size) return null;
  const categories = numeric ? undefined : [...new Set(xs.map(String))].sort(valueOrder(runs));
  return {
    title: `${metric} vs ${xKey}`,
    xLabel: xKey,
    yLabel: `${metric} (mean ± std over runs)`,
    series: [...series.values()],
    categories,
    legendTitle: legendTitle(seriesKeys),
    // Categories (pretraining levels, `scratch`) are not a series: points and error bars, no line between them.
    lines: numeric,
    // Parameter counts or sample sizes over orders of magnitude read better on a log axis.
    logX: numeric && wantsLogY(xs.map(Number)),
  };
}

/** Rows of one kind as (x, value) pairs for one metric. */
function curve(run: RunRecord, kind: string, xField: string, metric: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const row of run.rows) {
    if (row.kind !== kind) continue;
    const x = Number(row[xField]);
    const y = metricValue(row, metric, run.summary?.level);
    if (Number.isFinite(x) && y !== undefined) out.push([x, y]);
  }
  return out;
}

/**
 * A metric against epoch (or step) per group: the mean over the group's runs at
 * each x, with the std as error bars (epoch-wise double descent, dynamics).
 * Epoch curves start at epoch 1 (epoch 0, the untrained network, is left out).
 */
export function curveChart(runs: readonly RunRecord[], groupKeys: readonly string[], metric: string, kind: 'epoch' | 'dynamics', xField: 'epoch' | 'step'): Chart | null {
  const series: Series[] = [];
  for (const g of groupRuns(runs, groupKeys)) {
    const at = new Map<number, number[]>();
    for (const r of g.runs) {
      for (const [x, y] of curve(r, kind, xField, metric)) {
        // Epoch 0 is the initial network (chance accuracy, the loss at initialisation): it would stretch
        // the axis over a value no run trains at. It stays in metrics.jsonl; the curves start at epoch 1.
        if (kind === 'epoch' && x === 0) continue;
        at.set(x, [...(at.get(x) ?? []), y]);
      }
    }
    if (!at.size) continue;
    const points: Point[] = [...at.entries()].sort((a, b) => a[0] - b[0]).map(([x, ys]) => {
      const s = stat(ys);
      return { x, y: s.mean, err: s.std };
    });
    series.push({ name: seriesName(groupKeys, g.values), points });
  }
  if (!series.length) return null;
  return {
    title: `${metric} vs ${xField}${kind === 'dynamics' ? ' (dynamics)' : ' (from epoch 1)'}`,
    xLabel: xField,
    yLabel: `${metric} (mean ± std over runs)`,
    series,
    legendTitle: legendTitle(groupKeys),
    lines: true,
    // Curves spanning orders of magnitude (a Fisher trace falling from 100 to 0.001) on a log axis.
    logY: wantsLogY(series.flatMap((s) => s.points.map((p) => p.y))),
  };
}

const BOOKKEEPING = new Set(['epoch', 'step', 'seconds', 'trainable_blocks', 'trainable_params', 'num_tensors']);

/** Numeric measures in `dynamics` rows (Fisher trace, sharpness, ...). */
export function dynamicsMeasures(runs: readonly RunRecord[]): string[] {
  const s = new Set<string>();
  for (const r of runs) for (const row of r.rows) if (row.kind === 'dynamics') for (const [k, v] of Object.entries(row)) if (typeof v === 'number' && !BOOKKEEPING.has(k)) s.add(k);
  return [...s];
}

