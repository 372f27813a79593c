import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { integerTicks, renderChart } from '../src/report/svg';
import { cli, tmpDir } from './helpers';

/** Run folders written by hand: what `granular report` reads (config.yaml, summary.json, metrics.jsonl). */
function writeRuns(runs: Array<{ name: string; config: string; summary: Record<string, unknown>; epochs?: number }>): string {
  const root = tmpDir('granular-compare-');
  for (const r of runs) {
    const dir = path.join(root, r.name);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'config.yaml'), r.config);
    fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify(r.summary));
    const rows = Array.from({ length: (r.epochs ?? 7) + 1 }, (_, e) => ({ kind: 'epoch', epoch: e, step: e * 10, test_acc: 0.5 + 0.04 * e, train_loss: 1 / (1 + e) }));
    fs.writeFileSync(path.join(dir, 'metrics.jsonl'), rows.map((x) => JSON.stringify(x) + '\n').join(''));
  }
  return root;
}

/**
 * A small study: pretraining at leaf (24 classes) and at superclass (2), then
 * fine-tuning at superclass fully, as a linear probe and with gradual unfreezing
 * (freeze 0 plus a schedule), two seeds each.
 */
function study(): string {
  const runs: Array<{ name: string; config: string; summary: Record<string, unknown> }> = [];
  for (const seed of [0, 1]) {
    runs.push({ name: `pre-leaf-${seed}`, config: `seed: ${seed}\ntrain:\n  level: leaf\n`, summary: { status: 'completed', stage: 'pretrain', level: 'subclass', num_classes: 24, pretrain_level: 'subclass', test_acc: 0.4 + seed * 0.02, 'test_acc@superclass': 0.9 + seed * 0.02 } });
    runs.push({ name: `pre-top-${seed}`, config: `seed: ${seed}\ntrain:\n  level: top\n`, summary: { status: 'completed', stage: 'pretrain', level: 'superclass', num_classes: 2, pretrain_level: 'superclass', test_acc: 0.8 } });
    const ft = (name: string, extra: string, acc: number) =>
      runs.push({ name: `${name}-${seed}`, config: `seed: ${seed}\ntrain:\n  level: top\nfinetune:\n${extra}`, summary: { status: 'completed', stage: 'finetune', level: 'superclass', num_classes: 2, pretrain_level: 'subclass', test_acc: acc + seed * 0.01, frozen_blocks: 0 } });
    ft('ft-full', '  freeze: 0\n', 0.7);
    ft('ft-probe', '  freeze: all\n', 0.6);
    ft('ft-gradual', '  freeze: 0\n  unfreeze:\n    every: 2\n    unit: epoch\n    order: top-down\n', 0.95);
  }
  return writeRuns(runs);
}

test('report: a level (classes) column, one test_acc@<target> column for every run, and no row mixing levels', () => {
  const dir = study();
  const out = path.join(dir, 'rep');
  // Grouped by stage only: pretraining at 24 and at 2 classes would share a row; they are split by level.
  const r = cli(['report', dir, '--group-by', 'stage', '--metric', 'test_acc', '--out', out, '--no-png']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  assert.match(lines[0], /^\| stage +\| level \(classes\) +\| n +\| test_acc@superclass +\| test_acc +\|$/);
  // The 24-way pretraining: 0.41 at its own level, 0.91 at superclass; the 2-way one: 0.8 at both.
  assert.match(r.stdout, /\| pretrain \| subclass \(24\) +\| 2 +\| 0\.9100 ± 0\.0141 +\| 0\.4100 ± 0\.0141 \|/);
  assert.match(r.stdout, /\| pretrain \| superclass \(2\) +\| 2 +\| 0\.8000 ± 0\.0000 +\| 0\.8000 ± 0\.0000 \|/);
  assert.equal(lines.filter((l) => l.startsWith('| pretrain')).length, 2, 'one row per level');
  const md = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
  assert.match(md, /Rows are also split by the trained level/);
  assert.match(md, /test_acc@superclass scores every run at superclass/);
  // An explicit target level; an unknown one is refused with the levels there are.
  const t = cli(['report', dir, '--group-by', 'stage', '--target-level', 'subclass', '--out', out, '--no-png']);
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout.split('\n')[0], /test_acc@subclass/);
  const bad = cli(['report', dir, '--target-level', 'genus', '--out', out]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--target-level 'genus': no run trained at it or is scored at it\. Levels in these runs: superclass, subclass\./);
});

test('report --compare naming a value no run has is exit 2 before anything is written; a level alias gets a hint', () => {
  const dir = study();
  const out = path.join(dir, 'rep');
  const r = cli(['report', dir, '--where', 'stage=pretrain', '--compare', 'pretrain_level=subclass,top', '--out', out, '--no-png']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /no completed run has pretrain_level=top \(values found: subclass, superclass\)\. Levels are recorded under their names in the hierarchy, not as 'top'/);
  assert.equal(r.stdout, '', 'no table printed');
  assert.equal(fs.existsSync(out), false, 'nothing written');
  // The names found work.
  const ok = cli(['report', dir, '--where', 'stage=pretrain', '--compare', 'pretrain_level=subclass,superclass', '--out', out, '--no-png']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.ok(fs.existsSync(path.join(out, 'compare.md')));
});

test('report: gradual unfreezing is its own regime, not freeze 0', () => {
  const dir = study();
  const out = path.join(dir, 'rep');
  // Default grouping: the regime column tells full, probe and gradual apart.
  const d = cli(['report', dir, '--where', 'stage=finetune', '--metric', 'test_acc', '--out', out, '--no-png']);
  assert.equal(d.code, 0, d.stderr);
  assert.match(d.stdout.split('\n')[0], /^\| regime +\| level \(classes\) +\| n +\| test_acc +\|$/);
  assert.match(d.stdout, /\| full +\| superclass \(2\) +\| 2 +\| 0\.7050 ± 0\.0071 \|/);
  assert.match(d.stdout, /\| linear probe +\| superclass \(2\) +\| 2 +\| 0\.6050 ± 0\.0071 \|/);
  assert.match(d.stdout, /\| gradual \(every 2 epochs, top-down\) +\| superclass \(2\) +\| 2 +\| 0\.9550 ± 0\.0071 \|/);
  // Grouped by finetune.freeze, the gradual runs (freeze 0 + a schedule) get their own row.
  const f = cli(['report', dir, '--where', 'stage=finetune', '--group-by', 'finetune.freeze', '--metric', 'test_acc', '--out', out, '--no-png']);
  assert.equal(f.code, 0, f.stderr);
  assert.match(f.stdout, /\| 0 +\| full +\| superclass \(2\) +\| 2 +\| 0\.7050 ± 0\.0071 \|/);
  assert.match(f.stdout, /\| 0 +\| gradual \(every 2 epochs, top-down\) +\| superclass \(2\) +\| 2 +\| 0\.9550 ± 0\.0071 \|/);
  assert.doesNotMatch(f.stdout, /\| 0 +\| superclass \(2\) +\| 4 /, 'never one row of 4 mixing both');
  assert.match(fs.readFileSync(path.join(out, 'runs.csv'), 'utf8'), /ft-gradual-0,completed,0,"gradual \(every 2 epochs, top-down\)",0\.95,0,finetune,subclass,superclass,2\n/);
});

test('integer axes label their last value: an epoch axis ending at 7 says 7', () => {
  for (const e of [1, 3, 7, 9, 11, 13, 30, 31, 301]) {
    const t = integerTicks(0, e);
    assert.equal(t[t.length - 1], e, `ticks ${t} for 0..${e}`);
    assert.ok(t.every(Number.isInteger));
    for (let i = 1; i < t.length; i++) assert.ok(t[i] - t[i - 1] > (t[1] - t[0]) / 2 - 1e-9, `crowded ticks ${t}`);
  }
  const svg = renderChart({ title: 't', xLabel: 'epoch', yLabel: 'acc', series: [{ name: 'a', points: Array.from({ length: 8 }, (_, e) => ({ x: e, y: e / 10 })) }] });
  const labels = [...svg.matchAll(/y="\d+(?:\.\d+)?" font-size="12" text-anchor="middle">(\d+)<\/text>/g)].map((m) => Number(m[1]));
  assert.equal(labels[labels.length - 1], 7, `x labels ${labels}`);
  // Through the command: the epoch plot of 7-epoch runs labels epoch 7.
  const dir = study();
  const out = path.join(dir, 'rep');
  assert.equal(cli(['report', dir, '--group-by', 'stage', '--metric', 'test_acc', '--out', out, '--no-png']).code, 0);
  const curve = fs.readFileSync(path.join(out, 'test_acc-vs-epoch.svg'), 'utf8');
  assert.match(curve, />7<\/text>/);
});

const CHROMIUM = [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((f) => f && fs.existsSync(f));

/** Headless Chromium with a fresh profile and no network features; returns stdout. */
function chromium(args: string[]): string {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'granular-chromium-'));
  try {
    const r = spawnSync(CHROMIUM!, ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`, ...args], { encoding: 'utf8', timeout: 90_000, maxBuffer: 64 << 20 });
    if (r.status !== 0) throw new Error(`chromium exited ${r.status}: ${r.stderr.slice(-2000)}`);
    return r.stdout;
  } finally {
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

test('report --html: one index.html that renders offline in Chromium, with both tables, inline plots, sorting and run links', { skip: CHROMIUM ? false : 'Chromium not installed (Debian: apt-get install chromium); CI installs it' }, async () => {
  const dir = study();
  const out = path.join(dir, 'html');
  const r = cli(['report', dir, '--group-by', 'stage', '--html', '--out', out, '--no-png']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /open .*index\.html in a browser \(works offline\)/);
  const file = path.join(out, 'index.html');
  const html = fs.readFileSync(file, 'utf8');
  // Self-contained: nothing fetched from anywhere.
  assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//);
  assert.doesNotMatch(html, /<img /, 'plots are inline SVG, not files beside the page');
  // Each run links to its folder, relatively, and the folder is there.
  const links = [...html.matchAll(/<a href="([^"]+)">([^<]+)<\/a>/g)];
  assert.equal(links.length, 10);
  for (const [, href, name] of links) {
    assert.equal(path.basename(decodeURIComponent(href)), name);
    assert.ok(fs.existsSync(path.join(out, decodeURIComponent(href), 'summary.json')), `${href} leads to the run`);
  }

  // The DOM after the page's script ran, opened sorted by test_acc, best first.
  const dom = chromium(['--dump-dom', `file://${file}#sort=runs:test_acc:desc`]);
  assert.match(dom, /<table class="sortable" id="groups">/);
  assert.match(dom, /<table class="sortable" id="runs">/);
  const runsTable = dom.slice(dom.indexOf('id="runs"'));
  const names = [...runsTable.matchAll(/<a href="[^"]+">([^<]+)<\/a>/g)].map((m) => m[1]);
  assert.equal(names.length, 10);
  assert.deepEqual(names.slice(0, 2), ['ft-gradual-1', 'ft-gradual-0'], 'sorted by test_acc, descending');
  assert.equal(names[names.length - 1], 'pre-leaf-0', 'the lowest test_acc (0.40) last');
  assert.match(runsTable, /aria-sort="descending">test_acc</);
  assert.equal((dom.match(/<svg /g) ?? []).length >= 2, true, 'the plots are in the page');

  // The screenshot shows a page, not a blank one.
  const png = path.join(dir, 'shot.png');
  chromium([`--screenshot=${png}`, '--window-size=1280,1600', '--hide-scrollbars', `file://${file}`]);
  const { channels } = await sharp(png).stats();
  assert.ok(channels[0].stdev > 20, `the screenshot is not blank (stdev ${channels[0].stdev.toFixed(1)})`);
  const { data, info } = await sharp(png).greyscale().raw().toBuffer({ resolveWithObject: true });
  let dark = 0;
  for (const v of data) if (v < 128) dark++;
  const share = dark / (info.width * info.height);
  assert.ok(share > 0.005 && share < 0.5, `text and lines cover ${(100 * share).toFixed(2)} % of the page`);
});
