/**
 * Paired comparisons (DESIGN.md "Paired comparisons"): `report --compare
 * KEY=A,B` pairs runs that differ only in KEY (same seed and every other
 * setting) and reports, per metric, the mean difference A − B over the pairs
 * with a 95 % t interval, an exact two-sided sign test (the test to read
 * when n < 5, where the t interval rests on a normality it cannot check),
 * and the relative error reduction (err_B − err_A) / err_B (Hong et al.
 * 2023) with its interval. A verdict says "A better", "B better" (by the
 * metric's sense: higher accuracy, lower error, loss or severity; "A higher" /
 * "B higher" for metrics without one) or "not resolved" (the interval spans 0,
 * or n < 5 and the sign test's p ≥ 0.05, which it always is below 6 pairs). Pure functions on run
 * records: no tensors.
 */
import { UsageError } from '../util/errors';
import { keyValue, metricValue, RunRecord } from './runs';

/** The two-sided 97.5 % quantile of Student's t with `df` degrees of freedom (tables to 30; Cornish-Fisher beyond, error < 1e-3). */
export function tQuantile975(df: number): number {
  const table = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042];
  if (!(df >= 1)) return NaN;
  if (df <= 30) return table[Math.floor(df) - 1];
  const z = 1.959964;
  return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df * df);
}

/** Exact two-sided sign test: p of at least this many of `n` non-zero differences on one side under p = 1/2 (ties dropped). */
export function signTestP(positive: number, negative: number): number {
  const n = positive + negative;
  if (n === 0) return 1;
  const k = Math.min(positive, negative);
  let tail = 0;
  for (let i = 0; i <= k; i++) tail += binom(n, i);
  return Math.min(1, (2 * tail) / 2 ** n);
}

function binom(n: number, k: number): number {
  let c = 1;
  for (let i = 1; i <= k; i++) c = (c * (n - k + i)) / i;
  return c;
}

/** Mean and 95 % t interval of `xs` (NaN bounds for fewer than 2). */
export function tInterval(xs: readonly number[]): { mean: number; lo: number; hi: number; sd: number } {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return { mean, lo: NaN, hi: NaN, sd: NaN };
  const sd = Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1));
  const h = (tQuantile975(n - 1) * sd) / Math.sqrt(n);
  return { mean, lo: mean - h, hi: mean + h, sd };
}

export interface PairedResult {
  key: string;
  a: string;
  b: string;
  metric: string;
  /** Number of pairs. */
  n: number;
  /** Mean of metric_A − metric_B over the pairs, with its 95 % t interval. */
  diff: number;
  lo: number;
  hi: number;
  /** Pairs where A is above / below B (ties not counted). */
  aAbove: number;
  aBelow: number;
  /** Exact two-sided sign test. */
  signP: number;
  /** Relative error reduction (err_B − err_A) / err_B of the means, and the difference's interval over mean err_B; NaN when the metric is not an accuracy. */
  rer: number;
  rerLo: number;
  rerHi: number;
  verdict: string;
  /** Config keys that go with KEY (one value per side, different between sides): compared, not paired on. */
  treatment: string[];
  /** The pairs: the A and B run folders and their values. */
  pairs: Array<{ a: string; b: string; va: number; vb: number }>;
}

/** Parse `KEY=A,B`. UsageError otherwise. */
export function parseCompare(spec: string): { key: string; a: string; b: string } {
  const m = /^([^=]+)=([^,]+),([^,]+)$/.exec(spec.trim());
  if (!m) throw new UsageError(`--compare '${spec}': expected KEY=A,B, e.g. --compare pretrain_level=leaf,superclass.`);
  return { key: m[1].trim(), a: m[2].trim(), b: m[3].trim() };
}

/** Keys that name a run, not a setting: they differ between runs that are otherwise the same. */
const NOT_SETTINGS = new Set(['name']);

/**
 * Settings that go with KEY: config keys with one value on every A run and
 * another single value on every B run (a sweep stage's own settings when
 * KEY is sweep_stage; the unfreezing schedule when KEY is regime). They are
 * part of what is compared, not of what pairs runs.
 */
function treatmentKeys(ra: readonly RunRecord[], rb: readonly RunRecord[]): Set<string> {
  const keys = new Set([...ra, ...rb].flatMap((r) => Object.keys(r.config)));
  const one = (rs: readonly RunRecord[], k: string) => {
    const vs = new Set(rs.map((r) => JSON.stringify(r.config[k] ?? null)));
    return vs.size === 1 ? [...vs][0] : undefined;
  };
  return new Set([...keys].filter((k) => {
    const [a, b] = [one(ra, k), one(rb, k)];
    return a !== undefined && b !== undefined && a !== b;
  }));
}

/**
 * Everything about a run that must match its partner: every config key but KEY, the treatment's keys and the run's name, and the source's config.
 * A key set to null and an absent key are the same setting (as in treatmentKeys): a run without a schedule stores
 * `finetune.unfreeze: null`, one with a schedule `finetune.unfreeze.stop: null` and no `finetune.unfreeze`.
 */
function signature(run: RunRecord, key: string, treatment: ReadonlySet<string>): string {
  const own = Object.entries(run.config).filter(([k, v]) => v != null && k !== key && !NOT_SETTINGS.has(k) && !treatment.has(k));
  // Comparing pretraining levels (scratch included: it has no source) is comparing sources: their configs are what differs.
  const src = key === 'pretrain_level' ? [] : Object.entries(run.source ?? {}).filter(([k, v]) => v != null && `source.${k}` !== key && !NOT_SETTINGS.has(k));
  return JSON.stringify([own.sort(([x], [y]) => (x < y ? -1 : 1)), src.sort(([x], [y]) => (x < y ? -1 : 1))]);
}

/**
 * Pair the runs whose KEY is A with those whose KEY is B and every other
 * setting is the same (seed included; settings that go with KEY, see
 * treatmentKeys, excepted), and compare `metric` over the pairs.
 * The sources' configs must match too (`source.<key>`), except when KEY is
 * `pretrain_level`, which compares sources (a scratch run has none). UsageError when no pair forms or a pair is
 * ambiguous (two runs with the same settings), naming the runs.
 */
export function pairedComparison(runs: readonly RunRecord[], spec: { key: string; a: string; b: string }, metric: string): PairedResult {
  const { key, a, b } = spec;
  const side = (v: string) => runs.filter((r) => String(keyValue(r, key)) === v);
  const [ra, rb] = [side(a), side(b)];
  if (!ra.length || !rb.length) {
    const seen = [...new Set(runs.map((r) => String(keyValue(r, key))))].slice(0, 8);
    const missing = ra.length ? b : a;
    // Levels are recorded under their canonical names (DESIGN.md): `--level top` trains at the top level's own name.
    const alias = /level$/.test(key) && /^(top|leaf|depth:\d+)$/.test(missing) ? ` Levels are recorded under their names in the hierarchy, not as '${missing}' (the level a run trained at is in its summary.json, 'level'): use one of the values found.` : '';
    throw new UsageError(`--compare ${key}=${a},${b}: no completed run has ${key}=${missing} (values found: ${seen.join(', ')}).${alias}`);
  }
  const treatment = treatmentKeys(ra, rb);
  const index = (rs: RunRecord[], v: string) => {
    const m = new Map<string, RunRecord>();
    for (const r of rs) {
      const s = signature(r, key, treatment);
      if (m.has(s)) throw new UsageError(`--compare ${key}=${a},${b}: '${m.get(s)!.dir}' and '${r.dir}' both have ${key}=${v} and the same settings otherwise; a pair must be unique. Report them separately (e.g. with --where).`);
      m.set(s, r);
    }
    return m;
  };
  const [ia, ib] = [index(ra, a), index(rb, b)];
  const pairs: PairedResult['pairs'] = [];
  for (const [s, x] of ia) {
    const y = ib.get(s);
    if (!y) continue;
    const va = metricValue(x.summary, metric);
    const vb = metricValue(y.summary, metric);
    if (va === undefined || vb === undefined) continue;
    pairs.push({ a: x.dir, b: y.dir, va, vb });
  }
  if (!pairs.length) {
    throw new UsageError(`--compare ${key}=${a},${b}: no run with ${key}=${a} has a partner with ${key}=${b} and otherwise the same settings (seed included) and a value of '${metric}'. Runs to pair must differ only in ${key}.`);
  }
  const d = pairs.map((p) => p.va - p.vb);
  const t = tInterval(d);
  const aAbove = d.filter((x) => x > 0).length;
  const aBelow = d.filter((x) => x < 0).length;
  const signP = signTestP(aAbove, aBelow);
  // Relative error reduction for accuracies: err = 1 - acc, so err_B - err_A = acc_A - acc_B = diff.
  const isAcc = /_acc(@|$)|_top5(@|$)/.test(metric);
  const errB = isAcc ? 1 - pairs.reduce((s, p) => s + p.vb, 0) / pairs.length : NaN;
  const rer = isAcc ? t.mean / errB : NaN;
  const spans = !(t.lo > 0 || t.hi < 0);
  const small = pairs.length < 5 && signP >= 0.05;
  const higher = t.mean > 0 ? a : b;
  const lower = t.mean > 0 ? b : a;
  const sense = metricSense(metric);
  const verdict = spans || small ? 'not resolved' : sense === 'higher' ? `${higher} better` : sense === 'lower' ? `${lower} better` : `${higher} higher`;
  return { key, a, b, metric, n: pairs.length, diff: t.mean, lo: t.lo, hi: t.hi, aAbove, aBelow, signP, rer, rerLo: isAcc ? t.lo / errB : NaN, rerHi: isAcc ? t.hi / errB : NaN, verdict, treatment: [...treatment].sort(), pairs };
}

/**
 * Which way a metric improves, for the verdict: 'higher' for accuracies (`*_acc`, `*_top5`,
 * with or without `@qualifier`), 'lower' for errors, losses and mistake severities
 * (`*_error`, `*_loss`, `*mistake_severity`, `*_hdist*`), null for the rest (alignment,
 * Fisher trace, sharpness, block counts: the verdict then says which side is higher,
 * not which is better).
 */
export function metricSense(metric: string): 'higher' | 'lower' | null {
  const base = metric.split('@')[0];
  if (/(^|_)(acc|top5)$/.test(base)) return 'higher';
  if (/(^|_)(error|loss)$|mistake_severity$|(^|_)hdist$/.test(base)) return 'lower';
  return null;
}

const pct = (x: number, digits = 2) => (Number.isFinite(x) ? `${(x * 100).toFixed(digits)}` : '–');

/**
 * Whether a metric is a fraction in [0, 1] (accuracies, top-5, error rates), whose
 * differences the table gives in percentage points (×100). Every other metric (losses,
 * mistake severity, Fisher trace, block counts) keeps its own units.
 */
export function isFractionMetric(metric: string): boolean {
  return /(^|_)(acc|top5|error)$/.test(metric.split('@')[0]);
}

/** A difference in the metric's table units: points for fractions, the metric's own units else. */
function diffUnits(x: number, fraction: boolean): string {
  if (!Number.isFinite(x)) return '–';
  const sign = x >= 0 ? '+' : '';
  return fraction ? `${sign}${pct(x)}` : `${sign}${Number(x.toPrecision(4))}`;
}

/** One markdown table of paired results. Differences in points (×100) for fraction metrics (accuracy, error), else in the metric's own units; RER in %. */
export function compareTable(results: readonly PairedResult[]): string {
  const head = '| comparison | metric | n pairs | mean diff A − B (points for accuracy/error, else in the metric units) | 95 % t interval | A above / below B | sign test p | RER (err_B − err_A)/err_B | RER interval | verdict |';
  const sep = '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |';
  const rows = results.map((r) => {
    const fraction = isFractionMetric(r.metric);
    const signed = (x: number) => diffUnits(x, fraction);
    const also = r.treatment.length ? ` (with ${r.treatment.slice(0, 3).join(', ')}${r.treatment.length > 3 ? ', ...' : ''})` : '';
    return `| ${r.key}: ${r.a} vs ${r.b}${also} | ${r.metric} | ${r.n} | ${signed(r.diff)} | [${signed(r.lo)}, ${signed(r.hi)}] | ${r.aAbove} / ${r.aBelow} | ${r.signP.toFixed(3)} | ${Number.isFinite(r.rer) ? `${pct(r.rer, 1)} %` : '–'} | ${Number.isFinite(r.rerLo) ? `[${pct(r.rerLo, 1)}, ${pct(r.rerHi, 1)}] %` : '–'} | ${r.verdict} |`;
  });
  return [head, sep, ...rows].join('\n');
}

/** compare.csv: one row per comparison. */
export function compareCsv(results: readonly PairedResult[]): string {
  const cols = ['key', 'a', 'b', 'metric', 'n', 'diff', 'lo', 'hi', 'aAbove', 'aBelow', 'signP', 'rer', 'rerLo', 'rerHi', 'verdict'] as const;
  return [cols.join(','), ...results.map((r) => cols.map((c) => JSON.stringify(r[c])).join(','))].join('\n') + '\n';
}

/** What the compare table's columns mean, printed under it. */
export const COMPARE_NOTE =
  'Pairs: runs equal in every setting but the compared key (seed included). Interval: 95 % t over the pairs. ' +
  'Sign test: exact, two-sided; below 5 pairs a verdict also needs it, and it cannot reach p < 0.05 there (3 of 3 pairs: p = 0.25; 4 of 4: 0.125), so such a comparison is "not resolved" however consistent. ' +
  'RER = (err_B − err_A) / err_B with err = 1 − accuracy (Hong et al. 2023); its interval is the difference\'s over the mean err_B. ' +
  'A verdict names a winner only when the interval excludes 0 (and, below 5 pairs, the sign test is significant): higher accuracy, lower error, loss or mistake severity; for other metrics (alignment, Fisher trace, ...) it names the higher side, not a better one.';
