import { Group, groupLevel, groupStats, keyHeader, Stat } from './table';
import { levelLabel } from './runs';

/**
 * `report --format latex|markdown|csv`: the group table ready to paste into a
 * paper or a notebook. Accuracies (and errors) in percent, every number with
 * `digits` decimals (percentages; other metrics get 2 more, so a loss of 0.0123
 * is not 0.0), cells `mean ± std` over the runs of the row (sample std, n − 1),
 * n per row, and the fair-comparison flags (report/flags.ts) in a last column
 * when any row has one. LaTeX is a booktabs `tabular` (\usepackage{booktabs}).
 */
export type TableFormat = 'latex' | 'markdown' | 'csv';
export const TABLE_FORMATS: readonly TableFormat[] = ['latex', 'markdown', 'csv'];

/** Metrics read as a fraction of examples: accuracy, top-5, error (`test_acc@genus`, `ood_acc@jpeg:3`, `test_error`). */
export function isAccuracy(metric: string): boolean {
  return /(^|_)(acc|top5|error)(_|@|$)/.test(metric);
}

interface Cell {
  mean: string;
  std: string;
  n: number;
}

function cells(s: Stat, pct: boolean, digits: number): Cell | null {
  if (s.n === 0) return null;
  const k = pct ? 100 : 1;
  const d = pct ? digits : digits + 2;
  return { mean: (s.mean * k).toFixed(d), std: Number.isFinite(s.std) ? (s.std * k).toFixed(d) : '', n: s.n };
}

interface Table {
  keyHead: string[];
  metricHead: string[];
  rows: Array<{ keys: string[]; n: number; cells: Array<Cell | null>; flags: string }>;
  withFlags: boolean;
}

function build(groups: readonly Group[], keys: readonly string[], metrics: readonly string[], digits: number, flags?: (g: Group) => string[]): Table {
  const shown = keys.filter((k) => k !== 'level_classes');
  const levels = groups.some((g) => g.runs.some((r) => levelLabel(r) !== undefined));
  const rowFlags = groups.map((g) => flags?.(g) ?? []);
  return {
    keyHead: [...shown.map(keyHeader), ...(levels ? ['level (classes)'] : [])],
    metricHead: metrics.map((m) => (isAccuracy(m) ? `${m} (%)` : m)),
    rows: groups.map((g, i) => ({
      keys: [...g.values.filter((_, j) => keys[j] !== 'level_classes'), ...(levels ? [groupLevel(g)] : [])],
      n: g.runs.length,
      cells: groupStats(g, metrics).map((s, j) => cells(s, isAccuracy(metrics[j]), digits)),
      flags: rowFlags[i].join('; '),
    })),
    withFlags: rowFlags.some((f) => f.length),
  };
}

/** A mean ± std cell as text; (n=k) where only k of the row's runs have the metric. */
function plain(c: Cell | null, rowN: number, pm = ' ± '): string {
  if (!c) return '–';
  return `${c.mean}${c.std ? `${pm}${c.std}` : ''}${c.n !== rowN ? ` (n=${c.n})` : ''}`;
}

/** LaTeX text with its special characters escaped (and the report's own symbols spelled in LaTeX). */
export function latexEscape(s: string): string {
  return s
    .replace(/\\/g, '\\textbackslash{}')
    .replace(/([&%$#_{}])/g, '\\$1')
    .replace(/~/g, '\\textasciitilde{}')
    .replace(/\^/g, '\\textasciicircum{}')
    .replace(/–/g, '--')
    .replace(/±/g, '$\\pm$')
    .replace(/</g, '$<$')
    .replace(/>/g, '$>$')
    .replace(/⚠\s*/g, '');
}

export function formatTable(format: TableFormat, groups: readonly Group[], keys: readonly string[], metrics: readonly string[], digits: number, flags?: (g: Group) => string[]): string {
  const t = build(groups, keys, metrics, digits, flags);
  if (format === 'csv') {
    const head = [...t.keyHead, 'n', ...t.metricHead.flatMap((_h, j) => [`${metrics[j]}_mean${isAccuracy(metrics[j]) ? '_pct' : ''}`, `${metrics[j]}_std${isAccuracy(metrics[j]) ? '_pct' : ''}`, `${metrics[j]}_n`]), ...(t.withFlags ? ['flags'] : [])];
    const q = (v: string) => (/[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
    const rows = t.rows.map((r) => [...r.keys, String(r.n), ...r.cells.flatMap((c) => (c ? [c.mean, c.std, String(c.n)] : ['', '', '0'])), ...(t.withFlags ? [r.flags] : [])]);
    return [head, ...rows].map((r) => r.map(q).join(',')).join('\n') + '\n';
  }
  if (format === 'markdown') {
    const head = [...t.keyHead, 'n', ...t.metricHead, ...(t.withFlags ? ['flags'] : [])];
    const rows = t.rows.map((r) => [...r.keys, String(r.n), ...r.cells.map((c) => plain(c, r.n)), ...(t.withFlags ? [r.flags] : [])].map((v) => v.replace(/\|/g, '\\|')));
    const widths = head.map((h, i) => Math.max(h.length, 3, ...rows.map((r) => r[i].length)));
    const line = (c: string[]) => `| ${c.map((v, i) => v.padEnd(widths[i])).join(' | ')} |`;
    const rule = `| ${widths.map((w, i) => (i >= t.keyHead.length && i < t.keyHead.length + 1 + metrics.length ? '-'.repeat(w - 1) + ':' : '-'.repeat(w))).join(' | ')} |`;
    return [line(head), rule, ...rows.map(line)].join('\n') + '\n';
  }
  const align = [...t.keyHead.map(() => 'l'), 'r', ...metrics.map(() => 'r'), ...(t.withFlags ? ['l'] : [])].join('');
  const head = [...t.keyHead, '$n$', ...t.metricHead, ...(t.withFlags ? ['flags'] : [])].map((h, i) => (h === '$n$' && i === t.keyHead.length ? h : latexEscape(h)));
  const rows = t.rows.map((r) => [...r.keys.map(latexEscape), String(r.n), ...r.cells.map((c) => (c ? latexEscape(plain(c, r.n)) : '--')), ...(t.withFlags ? [latexEscape(r.flags)] : [])]);
  return [
    `% granular report: mean $\\pm$ sample std over the runs of each row; accuracies in %; needs \\usepackage{booktabs}`,
    `\\begin{tabular}{${align}}`,
    '\\toprule',
    `${head.join(' & ')} \\\\`,
    '\\midrule',
    ...rows.map((r) => `${r.join(' & ')} \\\\`),
    '\\bottomrule',
    '\\end{tabular}',
    '',
  ].join('\n');
}
