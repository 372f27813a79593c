import * as path from 'node:path';
import MarkdownIt from 'markdown-it';
import { escapeXml } from './svg';

/** The notes' markdown (`**Flag: ...**`, `code`) as HTML; raw HTML in a note stays text. */
const markdown = new MarkdownIt({ html: false, linkify: false, typographer: false });

/**
 * `report --html`: one self-contained index.html (no network, no files beside
 * it needed): the group table, a table with one row per run linking to its
 * folder, and every plot as inline SVG. Tables sort by any column on a click
 * (numbers numerically, a `mean ± std` cell by its mean); `#sort=runs:test_acc:desc`
 * in the address opens a table sorted.
 */

export interface HtmlTable {
  id: string;
  caption: string;
  head: string[];
  rows: Array<{ cells: string[]; href?: string }>;
}

export interface HtmlReport {
  title: string;
  /** Paragraphs under the title (markdown, rendered by markdown-it, as report.md shows them). */
  notes: string[];
  tables: HtmlTable[];
  charts: Array<{ name: string; svg: string }>;
}

/** The sort key of a cell: its leading number (the mean of `0.81 ± 0.02`), else its text. */
const SCRIPT = `
(function () {
  function key(td) {
    var t = td.getAttribute('data-v');
    if (t === null) t = td.textContent.trim();
    var m = /^-?\\d+(\\.\\d+)?(e-?\\d+)?/.exec(t);
    return m ? { n: parseFloat(m[0]), s: t } : { n: null, s: t };
  }
  function sortTable(table, col, dir) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      // Empty cells ('–') go last either way.
      if ((x.n === null) !== (y.n === null) && (x.s === '\\u2013' || y.s === '\\u2013')) return x.s === '\\u2013' ? 1 : -1;
      var c = x.n !== null && y.n !== null ? x.n - y.n : x.s.localeCompare(y.s, undefined, { numeric: true });
      return dir === 'desc' ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.setAttribute('aria-sort', i === col ? (dir === 'desc' ? 'descending' : 'ascending') : 'none');
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.addEventListener('click', function () {
        sortTable(table, i, th.getAttribute('aria-sort') === 'ascending' ? 'desc' : 'asc');
      });
    });
  });
  var m = /#sort=([^:]+):([^:]+)(?::(asc|desc))?/.exec(decodeURIComponent(location.hash));
  if (m) {
    var table = document.getElementById(m[1]);
    if (table) {
      var heads = Array.prototype.map.call(table.tHead.rows[0].cells, function (th) { return th.textContent.trim(); });
      var col = heads.indexOf(m[2]);
      if (col >= 0) sortTable(table, col, m[3] || 'asc');
    }
  }
})();
`;

const STYLE = `
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin: 0 0 8px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
p { margin: 4px 0; max-width: 110ch; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; white-space: nowrap; }
th { background: #eef2f7; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.charts figure { margin: 0; border: 1px solid #ddd; }
.charts svg { display: block; max-width: 100%; height: auto; }
`;

const numeric = (s: string) => /^-?\d+(\.\d+)?(e-?\d+)?( ± .*)?( \(n=\d+\))?$/.test(s.trim());

function table(t: HtmlTable): string {
  const head = t.head.map((h) => `<th scope="col" aria-sort="none">${escapeXml(h)}</th>`).join('');
  const body = t.rows
    .map((r) => {
      const cells = r.cells.map((c, i) => {
        const text = escapeXml(c);
        const content = i === 0 && r.href ? `<a href="${escapeXml(r.href)}">${text}</a>` : text;
        return `<td${numeric(c) ? ' class="num"' : ''}>${content}</td>`;
      });
      return `<tr>${cells.join('')}</tr>`;
    })
    .join('\n');
  return `<table class="sortable" id="${escapeXml(t.id)}">\n<caption style="caption-side: top; text-align: left; font-weight: bold; padding: 4px 0">${escapeXml(t.caption)}</caption>\n<thead><tr>${head}</tr></thead>\n<tbody>\n${body}\n</tbody>\n</table>`;
}

/** The whole page. SVGs are inlined as they are (they come from renderChart, which escapes its text). */
export function renderHtml(r: HtmlReport): string {
  const charts = r.charts.map((c) => `<figure id="${escapeXml(c.name)}">\n${c.svg.replace(/^<\?xml[^>]*>\s*/, '')}</figure>`).join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeXml(r.title)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeXml(r.title)}</h1>
${r.notes.map((n) => `<p>${markdown.renderInline(n)}</p>`).join('\n')}
${r.tables.map(table).join('\n')}
${r.charts.length ? `<h2>Plots</h2>\n<div class="charts">\n${charts}\n</div>` : ''}
<script>${SCRIPT}</script>
</body>
</html>
`;
}

/** A link from the report folder to a run folder: relative, each segment URL-encoded, ending in '/'. */
export function runHref(outDir: string, runDir: string): string {
  const rel = path.relative(path.resolve(outDir), path.resolve(runDir)) || '.';
  return rel.split(path.sep).map((s) => (s === '..' || s === '.' ? s : encodeURIComponent(s))).join('/') + '/';
}
