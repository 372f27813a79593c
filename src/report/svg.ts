/**
 * A small SVG chart writer: points joined by lines, vertical error bars, a
 * title, axis labels and a legend. The x axis is numeric or categorical.
 * Text uses a generic sans-serif font so sharp (librsvg) renders it as PNG.
 *
 * Why our own and not a plotting library: the report needs one chart kind
 * (mean ± std lines over a numeric, log or categorical axis) as static SVG
 * that is inlined into a self-contained index.html and rasterised by sharp.
 * Vega/Vega-Lite (the well-kept library that renders SVG without a browser)
 * would add the Vega runtime and its d3 modules, several MB and dozens of
 * packages, to draw this; Plotly and Chart.js need a browser or a canvas
 * binding. Revisit if the report needs interactive or many kinds of charts.
 */

export interface Point {
  x: number | string;
  y: number;
  /** Half-length of the error bar (a standard deviation); absent or NaN: none. */
  err?: number;
}

export interface Series {
  name: string;
  points: Point[];
}

export interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Categorical x axis in this order; numeric when absent. */
  categories?: string[];
  /** Heading of the legend (the grouping keys the series names are values of). */
  legendTitle?: string;
  /** Join points with lines (false: points and error bars only). */
  lines?: boolean;
  /** Logarithmic y axis (positive values; error bars reaching zero or below are cut at the bottom). */
  logY?: boolean;
  /** Logarithmic numeric x axis (positive values: parameter counts, sample sizes). */
  logX?: boolean;
}

/** Whether positive values spanning more than two decades read better on a log axis. */
export function wantsLogY(values: readonly number[]): boolean {
  const v = values.filter(Number.isFinite);
  return v.length > 1 && v.every((x) => x > 0) && Math.max(...v) / Math.min(...v) > 100;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const W = 820;
const H = 460;
const M = { left: 78, right: 250, top: 56, bottom: 64 };

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 6): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (lo === hi) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  // Multiples of the step, computed from an integer count (adding the step up accumulates rounding).
  const first = Math.ceil(lo / step - 1e-9);
  for (let k = first; k * step <= hi + step * 1e-9; k++) {
    const v = Number((k * step).toPrecision(12));
    out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return out;
}

/**
 * Ticks for an axis of whole numbers (epochs, steps, block counts): integer
 * steps of 1, 2, 5 × 10^k, and the last value always labelled (an epoch axis
 * that stops at 7 must say 7, not end at 6); a round tick crowding it gives way.
 */
export function integerTicks(lo: number, hi: number, count = 6): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (lo === hi) return [lo];
  const raw = Math.max(1, (hi - lo) / count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) out.push(v);
  if (out[out.length - 1] !== hi) {
    if (out.length && hi - out[out.length - 1] <= step / 2) out.pop();
    out.push(hi);
  }
  return out;
}

/** Powers of ten within [10^lo, 10^hi], plus 2x and 5x when there are fewer than three. */
function logTicks(lo: number, hi: number): number[] {
  const decades = Array.from({ length: Math.max(0, Math.floor(hi) - Math.ceil(lo) + 1) }, (_, k) => Math.ceil(lo) + k);
  const mult = decades.length < 3 ? [1, 2, 5] : [1];
  return Array.from({ length: Math.ceil(hi) - Math.floor(lo) + 1 }, (_, k) => Math.floor(lo) + k)
    .flatMap((d) => mult.map((m) => m * 10 ** d))
    .filter((t) => Math.log10(t) >= lo - 1e-9 && Math.log10(t) <= hi + 1e-9);
}

function tickLabel(v: number): string {
  if (Math.abs(v) >= 1e5 || (Math.abs(v) < 1e-3 && v !== 0)) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

function truncate(s: string, n: number): string {
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

export function renderChart(c: Chart): string {
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const cats = c.categories;
  const logX = c.logX === true && !cats;
  const tx = (x: number) => (logX ? Math.log10(x) : x);
  const xs = cats ? [] : c.series.flatMap((s) => s.points.map((p) => tx(Number(p.x))));
  const logY = c.logY === true;
  // On a log axis the range comes from the points and the error bars' positive ends.
  const ys = c.series.flatMap((s) => s.points.flatMap((p) => (Number.isFinite(p.err) ? [p.y - p.err!, p.y, p.y + p.err!] : [p.y]))).filter((y) => !logY || y > 0);
  const ty = (y: number) => (logY ? Math.log10(y) : y);
  let [x0, x1] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [0, 1];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  let [y0, y1] = ys.length ? [Math.min(...ys.map(ty)), Math.max(...ys.map(ty))] : [0, 1];
  const pad = y1 > y0 ? (y1 - y0) * 0.06 : Math.max(Math.abs(y0) * 0.1, 0.05);
  [y0, y1] = [y0 - pad, y1 + pad];
  const xPos = (x: number | string) =>
    cats ? M.left + ((cats.indexOf(String(x)) + 0.5) / cats.length) * pw : M.left + ((tx(Number(x)) - x0) / (x1 - x0)) * pw;
  // Values off a log axis's range (zero, negative) sit on its bottom edge.
  const yPos = (y: number) => M.top + (1 - (Math.max(y0, Math.min(y1, logY && y <= 0 ? y0 : ty(y))) - y0) / (y1 - y0)) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, Helvetica, sans-serif">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${M.left + pw / 2}" y="30" font-size="17" font-weight="bold" text-anchor="middle">${escapeXml(truncate(c.title, 80))}</text>`);

  // Grid and y ticks.
  const yTicks = logY ? logTicks(y0, y1) : niceTicks(y0, y1);
  for (const t of yTicks) {
    const y = yPos(t).toFixed(1);
    out.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${M.left - 8}" y="${y}" font-size="12" text-anchor="end" dominant-baseline="middle">${tickLabel(t)}</text>`);
  }
  // x ticks.
  // Integer x values (epochs, steps, block counts) get integer ticks only.
  const intX = xs.length > 0 && xs.every(Number.isInteger);
  const xTicks: Array<[number, string]> = cats
    ? cats.map((k) => [xPos(k), truncate(k, 14)])
    : logX
      ? logTicks(x0, x1).map((t) => [xPos(t), tickLabel(t)])
      : (intX ? integerTicks(Math.min(...xs), Math.max(...xs)) : niceTicks(x0, x1)).map((t) => [xPos(t), tickLabel(t)]);
  for (const [x, text] of xTicks) {
    out.push(`<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${M.top + ph}" y2="${M.top + ph + 5}" stroke="#333"/>`);
    out.push(`<text x="${x.toFixed(1)}" y="${M.top + ph + 19}" font-size="12" text-anchor="middle">${escapeXml(text)}</text>`);
  }
  out.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${M.left + pw / 2}" y="${H - 16}" font-size="14" text-anchor="middle">${escapeXml(logX ? `${c.xLabel} (log scale)` : c.xLabel)}</text>`);
  const yLabel = logY ? `${c.yLabel} (log scale)` : c.yLabel;
  out.push(`<text x="20" y="${M.top + ph / 2}" font-size="14" text-anchor="middle" transform="rotate(-90 20 ${M.top + ph / 2})">${escapeXml(yLabel)}</text>`);

  c.series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const pts = [...s.points].filter((p) => Number.isFinite(p.y)).sort((a, b) => xPos(a.x) - xPos(b.x));
    // Series are nudged apart on a categorical axis so error bars do not overlap.
    const dx = cats && c.series.length > 1 ? (i - (c.series.length - 1) / 2) * Math.min(8, pw / cats.length / (c.series.length + 1)) : 0;
    out.push(`<g class="series" data-name="${escapeXml(s.name)}" stroke="${color}" fill="${color}">`);
    if (c.lines !== false && pts.length > 1) {
      out.push(`<polyline fill="none" stroke-width="2" points="${pts.map((p) => `${(xPos(p.x) + dx).toFixed(1)},${yPos(p.y).toFixed(1)}`).join(' ')}"/>`);
    }
    for (const p of pts) {
      const x = xPos(p.x) + dx;
      if (Number.isFinite(p.err) && p.err! > 0) {
        const [ya, yb] = [yPos(p.y - p.err!), yPos(p.y + p.err!)];
        out.push(`<path d="M${x.toFixed(1)},${ya.toFixed(1)}V${yb.toFixed(1)}M${(x - 4).toFixed(1)},${ya.toFixed(1)}h8M${(x - 4).toFixed(1)},${yb.toFixed(1)}h8" stroke-width="1.5" fill="none"/>`);
      }
      if (pts.length <= 60) out.push(`<circle cx="${x.toFixed(1)}" cy="${yPos(p.y).toFixed(1)}" r="3.5"/>`);
    }
    out.push('</g>');
  });

  // Legend, right of the plot.
  const lx = M.left + pw + 16;
  const ly = M.top + (c.legendTitle ? 28 : 10);
  if (c.legendTitle) out.push(`<text x="${lx}" y="${M.top + 8}" font-size="12" font-weight="bold">${escapeXml(truncate(c.legendTitle, 34))}</text>`);
  c.series.slice(0, 20).forEach((s, i) => {
    const y = ly + i * 20;
    const color = PALETTE[i % PALETTE.length];
    out.push(`<line x1="${lx}" x2="${lx + 22}" y1="${y}" y2="${y}" stroke="${color}" stroke-width="2"/><circle cx="${lx + 11}" cy="${y}" r="3.5" fill="${color}"/>`);
    out.push(`<text x="${lx + 28}" y="${y}" font-size="12" dominant-baseline="middle">${escapeXml(truncate(s.name, 30))}</text>`);
  });
  if (c.series.length > 20) out.push(`<text x="${lx}" y="${ly + 20 * 20}" font-size="12">+${c.series.length - 20} more</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
