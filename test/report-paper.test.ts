import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { belowText } from '../src/report/flags';
import { cleanNumber } from '../src/report/table';
import { cli, ROOT, tmpDir } from './helpers';

/**
 * From runs to a paper (issue 23, items 5 and 6): the HTML report carries what
 * report.md has (flags column, notes rendered), plots read right (categories
 * as points, epoch curves not squashed by epoch 0), `--format latex|markdown|csv`
 * paste-ready in %, flags print true numbers, a scratch baseline on a smaller
 * budget is flagged, and every README section a note cites exists.
 */

interface FakeRun {
  name: string;
  config: string;
  summary: Record<string, unknown>;
  from?: string;
  rows?: Array<Record<string, unknown>>;
}

function writeRuns(runs: FakeRun[]): string {
  const root = tmpDir('granular-paper-');
  for (const r of runs) {
    const dir = path.join(root, r.name);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'config.yaml'), r.config);
    fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify(r.summary));
    fs.writeFileSync(path.join(dir, 'run.json'), JSON.stringify({ stage: r.summary.stage, from: r.from ?? null }));
    fs.writeFileSync(path.join(dir, 'metrics.jsonl'), (r.rows ?? []).map((x) => JSON.stringify(x) + '\n').join(''));
  }
  return root;
}

/**
 * Pretraining at leaf (underfit: train_acc_final 0.7967, not converged) and at
 * superclass, 30 epochs x 1,800 images each; fine-tuning from each, 2 seeds; a
 * from-scratch baseline of 10 epochs x 1,800 images (a third of the budget).
 */
function study(): string {
  const runs: FakeRun[] = [
    { name: 'pretrain-leaf', config: 'seed: 0\ntrain: { level: leaf, epochs: 30 }\n', summary: { status: 'completed', stage: 'pretrain', level: 'leaf', num_classes: 24, pretrain_level: 'leaf', test_acc: 0.61, train_acc_final: 0.7967, converged: false, epochs_trained: 30, train_images: 1800 } },
    { name: 'pretrain-top', config: 'seed: 0\ntrain: { level: top, epochs: 30 }\n', summary: { status: 'completed', stage: 'pretrain', level: 'superclass', num_classes: 2, pretrain_level: 'superclass', test_acc: 0.8, train_acc_final: 0.99, converged: true, epochs_trained: 30, train_images: 1800 } },
  ];
  const acc: Record<string, number[]> = { leaf: [0.886, 0.894], superclass: [0.814, 0.81], scratch: [0.788, 0.79] };
  for (const [level, values] of Object.entries(acc)) {
    values.forEach((a, seed) => {
      const scratch = level === 'scratch';
      runs.push({
        name: `finetune-${level}-${seed}`,
        from: scratch ? undefined : `../pretrain-${level === 'leaf' ? 'leaf' : 'top'}`,
        config: `seed: ${seed}\ntrain: { level: top, epochs: 10 }\n`,
        summary: { status: 'completed', stage: 'finetune', level: 'superclass', num_classes: 2, pretrain_level: level, test_acc: a, test_acc_hard: a - 0.1, frozen_blocks: 0, ...(scratch ? { converged: true, train_acc_final: 0.95, epochs_trained: 10, train_images: 1800 } : {}) },
        rows: [
          { kind: 'epoch', epoch: 0, step: 0, test_acc: 0.04, train_loss: 40 },
          { kind: 'epoch', epoch: 1, step: 10, test_acc: a - 0.02, train_loss: 0.5 },
          { kind: 'epoch', epoch: 2, step: 20, test_acc: a - 0.01, train_loss: 0.4 },
          { kind: 'epoch', epoch: 3, step: 30, test_acc: a, train_loss: 0.3 },
        ],
      });
    });
  }
  return writeRuns(runs);
}

const args = (dir: string, out: string, ...more: string[]) => ['report', dir, '--where', 'stage=finetune', '--group-by', 'pretrain_level', '--metric', 'test_acc', '--metric', 'test_acc_hard', '--out', out, '--no-png', ...more];

test('flags print values that are true, and a scratch baseline on a smaller budget is flagged', () => {
  assert.equal(belowText(0.7967, 0.8), '0.7967');
  assert.equal(belowText(0.79999, 0.8), '0.79999', '0.8000 would read as not below 0.8');
  assert.equal(cleanNumber(0.1 + 0.2), '0.3');
  assert.equal(cleanNumber(0.019000000000000017), '0.019');
  const dir = study();
  const r = cli(args(dir, path.join(dir, 'out')));
  assert.equal(r.code, 0, r.stderr);
  const row = (level: string) => r.stdout.split('\n').find((l) => l.startsWith(`| ${level} `))!;
  assert.match(row('leaf'), /source underfit: train_acc_final 0\.7967 < 0\.8 \(1\/1\)/);
  assert.doesNotMatch(r.stdout, /0\.80 < 0\.8/);
  assert.match(row('leaf'), /source not converged \(1\/1\)/);
  assert.match(row('leaf'), /source budget 54,000 images/);
  assert.match(row('scratch'), /source budget 18,000 images/, 'the scratch baseline is its own source');
  assert.match(r.stdout, /Flag: source budgets differ \(18,000, 54,000 images/);
});

test('--html: the flags column, notes rendered from markdown, levels as points, epoch curves from epoch 1', () => {
  const dir = study();
  const out = path.join(dir, 'out');
  const r = cli(args(dir, out, '--html'));
  assert.equal(r.code, 0, r.stderr);
  const html = fs.readFileSync(path.join(out, 'index.html'), 'utf8');
  const groups = html.slice(html.indexOf('<table class="sortable" id="groups"'), html.indexOf('</table>', html.indexOf('id="groups"')));
  assert.match(groups, /<th scope="col" aria-sort="none">flags<\/th>/);
  assert.match(groups, /<td>⚠ source not converged \(1\/1\); source underfit: train_acc_final 0\.7967 &lt; 0\.8 \(1\/1\); source budget 54,000 images<\/td>/);
  assert.match(groups, /<td>⚠ source budget 18,000 images<\/td>/);
  assert.match(html, /<p><strong>Flag: source underfit\.<\/strong> Some pretraining runs/);
  assert.doesNotMatch(html, /\*\*Flag/, 'no markdown left as text');
  // Pretraining levels are categories: points with error bars, no line from one level to the next.
  const levels = fs.readFileSync(path.join(out, 'test_acc-vs-pretrain_level.svg'), 'utf8');
  assert.match(levels, /<circle /);
  assert.doesNotMatch(levels, /<polyline/);
  // Epoch curves start at epoch 1: the untrained network (test_acc 0.04, train_loss 40) does not set the axis.
  const epochs = fs.readFileSync(path.join(out, 'test_acc-vs-epoch.svg'), 'utf8');
  assert.match(epochs, /<polyline/);
  const yTicks = [...epochs.matchAll(/text-anchor="end" dominant-baseline="middle">([\d.]+)<\/text>/g)].map((m) => Number(m[1]));
  assert.ok(Math.min(...yTicks) > 0.5, `y axis from ${Math.min(...yTicks)}: epoch 0 squashed it`);
  assert.doesNotMatch(epochs, /y="415" font-size="12" text-anchor="middle">0<\/text>/, 'no epoch-0 tick');
});

test('report --format latex matches the golden table; markdown and csv in % with --digits', () => {
  const dir = study();
  const out = path.join(dir, 'out');
  const tex = cli(args(dir, out, '--format', 'latex'));
  assert.equal(tex.code, 0, tex.stderr);
  const golden = fs.readFileSync(path.join(ROOT, 'test', 'golden', 'report-table.tex'), 'utf8');
  assert.equal(tex.stdout, golden, 'stdout is the table alone, as test/golden/report-table.tex');
  assert.equal(fs.readFileSync(path.join(out, 'table.tex'), 'utf8'), golden);
  // Balanced: every row has as many cells as the column spec, braces and environments close.
  const cols = /\\begin\{tabular\}\{([lr]+)\}/.exec(golden)![1].length;
  for (const l of golden.split('\n').filter((x) => x.endsWith('\\\\'))) assert.equal(l.replace(/\\&/g, '').split('&').length, cols, l);

  const md = cli(args(dir, out, '--format', 'markdown', '--digits', '2'));
  assert.equal(md.code, 0, md.stderr);
  assert.match(md.stdout, /^\| pretrain_level \| level \(classes\) \| n +\| test_acc \(%\) +\| test_acc_hard \(%\) +\| flags/);
  assert.match(md.stdout, /\| leaf +\| superclass \(2\) +\| 2 +\| 89\.00 ± 0\.57 +\| 79\.00 ± 0\.57 +\|/);
  const csv = cli(args(dir, out, '--format', 'csv', '--digits', '0'));
  assert.equal(csv.code, 0, csv.stderr);
  const lines = csv.stdout.trim().split('\n');
  assert.equal(lines[0], 'pretrain_level,level (classes),n,test_acc_mean_pct,test_acc_std_pct,test_acc_n,test_acc_hard_mean_pct,test_acc_hard_std_pct,test_acc_hard_n,flags');
  assert.match(lines[3], /^scratch,superclass \(2\),2,79,0,2,69,0,2,⚠? ?source budget 18,000 images$|^scratch,superclass \(2\),2,79,0,2,69,0,2,"source budget 18,000 images"$/);
  // Bad values exit 2 with what to do.
  const bad = cli(args(dir, out, '--format', 'latx'));
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--format 'latx' must be one of latex, markdown, csv\. Did you mean 'latex'\?/);
  assert.equal(cli(args(dir, out, '--format', 'csv', '--digits', '-1')).code, 2);
});

test('every README section a report note or flag cites exists in README.md', () => {
  const headings = new Set(
    fs
      .readFileSync(path.join(ROOT, 'README.md'), 'utf8')
      .split('\n')
      .filter((l) => /^#{1,6} /.test(l))
      .map((l) => l.replace(/^#+ /, '').trim()),
  );
  const cited: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      // `README.md "X"` anywhere in granular's code (a bare `README "X"` may be another project's, e.g.
      // safetensors'), and any README citation in the report's own code.
      else if (p.endsWith('.ts')) {
        const re = path.relative(ROOT, p).startsWith(path.join("src", "report") + path.sep) ? /README(?:\.md)?(?: section)? "([^"]+)"/g : /README\.md(?: section)? "([^"]+)"/g;
        for (const m of fs.readFileSync(p, 'utf8').matchAll(re)) cited.push(`${path.relative(ROOT, p)}: ${m[1]}`);
      }
    }
  };
  walk(path.join(ROOT, 'src'));
  assert.ok(cited.some((c) => c.startsWith(path.join('src', 'report', 'flags.ts'))), 'the flags cite README');
  for (const c of cited) assert.ok(headings.has(c.slice(c.indexOf(': ') + 2)), `${c}: no such heading in README.md`);
  // And no report text sends readers to DESIGN.md, which a checkout of the tool does not explain from.
  for (const f of ['flags.ts', 'report.ts', 'formats.ts']) assert.doesNotMatch(fs.readFileSync(path.join(ROOT, 'src', 'report', f), 'utf8'), /DESIGN\.md "/, f);
});
