import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { niceTicks, renderChart, wantsLogY } from '../src/report/svg';
import { stat } from '../src/report/table';
import { cli, tmpDir } from './helpers';

interface FakeRun {
  name: string;
  config: string;
  summary?: Record<string, unknown>;
  rows?: Array<Record<string, unknown>>;
}

/** Write run folders by hand: config.yaml, summary.json, metrics.jsonl. */
function makeRuns(runs: FakeRun[]): string {
  const root = tmpDir('granular-report-');
  for (const r of runs) {
    const dir = path.join(root, r.name);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'config.yaml'), r.config);
    if (r.summary) fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify(r.summary));
    fs.writeFileSync(path.join(dir, 'metrics.jsonl'), (r.rows ?? []).map((x) => JSON.stringify(x) + '\n').join(''));
  }
  return root;
}

/** Fine-tuning runs from three pretraining levels, three seeds each, plus one unfinished run. */
function granularityRuns(): string {
  const acc: Record<string, number[]> = { leaf: [0.8, 0.7, 0.9], basic: [0.6, 0.65, 0.7], scratch: [0.5, 0.5, 0.5] };
  const classes: Record<string, number> = { leaf: 24, basic: 6, scratch: 2 };
  const runs: FakeRun[] = [];
  for (const [level, values] of Object.entries(acc)) {
    values.forEach((a, seed) => {
      runs.push({
        name: `finetune-level=${level},seed=${seed}`,
        config: `name: t\nseed: ${seed}\ntrain:\n  level: top\n  epochs: 3\nfinetune:\n  freeze: ${level === 'scratch' ? 0 : 1}\n`,
        summary: { status: 'completed', stage: 'finetune', level: 'superclass', level_spec: 'top', num_classes: 2, pretrain_level: level, test_acc: a, test_acc_hard: a - 0.1, frozen_blocks: 1 },
        rows: [
          { kind: 'epoch', epoch: 0, step: 0, test_acc: 0.5 },
          { kind: 'epoch', epoch: 1, step: 10, test_acc: a - 0.05 },
          { kind: 'event', epoch: 1, message: 'ignored' },
          // The last row is not the final value: reports read summary.json.
          { kind: 'epoch', epoch: 2, step: 20, test_acc: 0.123 },
          { kind: 'dynamics', epoch: 1, step: 5, fisher_trace: 1 + seed, sharpness_avg: 0.1 },
          { kind: 'dynamics', epoch: 2, step: 15, fisher_trace: 2 + seed, sharpness_avg: 0.2 },
        ],
      });
      // A pretraining run describes the levels (leaf = 24 classes, basic = 6): the order on plots.
      if (seed === 0 && level !== 'scratch') {
        runs.push({ name: `pretrain-${level}`, config: `seed: 0\ntrain:\n  level: ${level}\n`, summary: { status: 'completed', stage: 'pretrain', level, num_classes: classes[level], pretrain_level: level, test_acc: 0.3 } });
      }
    });
  }
  runs.push({ name: 'finetune-crashed', config: 'seed: 9\ntrain:\n  level: top\n', rows: [{ kind: 'epoch', epoch: 0, test_acc: 0.5 }] });
  return makeRuns(runs);
}

test('mean and sample std', () => {
  const s = stat([0.8, 0.7, 0.9]);
  assert.ok(Math.abs(s.mean - 0.8) < 1e-12);
  assert.ok(Math.abs(s.std - 0.1) < 1e-12);
  assert.equal(s.n, 3);
  assert.ok(Number.isNaN(stat([1]).std));
  const ticks = niceTicks(0, 1, 5);
  assert.equal(ticks.length, 6);
  assert.ok(ticks.every((t, i) => Math.abs(t - i * 0.2) < 1e-9));
});

test('report: markdown table with mean ± std and n per group, CSV, plots with the expected series', () => {
  const dir = granularityRuns();
  const out = path.join(dir, 'out');
  const r = cli(['report', dir, '--group-by', 'stage', '--group-by', 'pretrain_level', '--metric', 'test_acc', '--metric', 'test_acc_hard', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  // The trained level is a column; the runs trained at three levels, so test_acc@superclass
  // (the fine-tuning runs' level) scores them all at one level.
  assert.match(lines[0], /^\| stage +\| pretrain_level +\| level \(classes\) +\| n +\| test_acc@superclass +\| test_acc +\| test_acc_hard +\|$/);
  // Finest level first, scratch last; values from summary.json, not the last metrics row.
  const body = lines.filter((l) => l.startsWith('| finetune'));
  assert.equal(body.length, 3);
  assert.match(body[0], /\| finetune \| leaf +\| superclass \(2\) +\| 3 +\| 0\.8000 ± 0\.1000 +\| 0\.8000 ± 0\.1000 \| 0\.7000 ± 0\.1000 \|/);
  assert.match(body[1], /\| finetune \| basic +\| superclass \(2\) +\| 3 +\| 0\.6500 ± 0\.0500 +\| 0\.6500 ± 0\.0500 \| 0\.5500 ± 0\.0500 \|/);
  assert.match(body[2], /\| finetune \| scratch +\| superclass \(2\) +\| 3 +\| 0\.5000 ± 0\.0000 +\|/);
  assert.match(r.stdout, /\| pretrain \| leaf +\| leaf \(24\) +\| 1 +\| – +\| 0\.3000 +\| – +\|/);
  assert.match(r.stderr, /1 run\(s\) not completed, left out: .*finetune-crashed/);
  assert.match(r.stdout, /11 runs; wrote/);

  const csv = fs.readFileSync(path.join(out, 'summary.csv'), 'utf8').trim().split('\n');
  assert.equal(csv[0], 'stage,pretrain_level,n,test_acc@superclass_mean,test_acc@superclass_std,test_acc@superclass_n,test_acc_mean,test_acc_std,test_acc_n,test_acc_hard_mean,test_acc_hard_std,test_acc_hard_n,level,num_classes');
  const leaf = csv.find((l) => l.startsWith('finetune,leaf,'))!.split(',').map(Number);
  assert.equal(leaf[2], 3);
  assert.ok(Math.abs(leaf[6] - 0.8) < 1e-9 && Math.abs(leaf[7] - 0.1) < 1e-9 && leaf[8] === 3);
  assert.equal(csv.find((l) => l.startsWith('pretrain,leaf,')), 'pretrain,leaf,1,,,0,0.3,,1,,,0,leaf,24');
  const runsCsv = fs.readFileSync(path.join(out, 'runs.csv'), 'utf8');
  // The seed, every grouping key and every config key that differs between the runs; no float noise
  // (test_acc_hard 0.8 - 0.1 is 0.7000000000000001 in float64, written 0.7).
  assert.match(runsCsv, /^run,status,stage,pretrain_level,test_acc@superclass,test_acc,test_acc_hard,seed,level,num_classes,regime,name,train\.level,train\.epochs,finetune\.freeze\n/);
  assert.equal(runsCsv.trim().split('\n').length, 1 + 11);
  assert.match(runsCsv, /"[^"]*finetune-level=leaf,seed=0",completed,finetune,leaf,0\.8,0\.8,0\.7,0,superclass,2,freeze 1,t,top,3,1\n/);
  assert.match(runsCsv, /"[^"]*finetune-level=basic,seed=1",completed,finetune,basic,0\.65,0\.65,0\.55,1,/);

  // Plots: metric vs the first non-stage key, vs epoch, dynamics vs step; SVG and PNG.
  const svg = fs.readFileSync(path.join(out, 'test_acc-vs-pretrain_level.svg'), 'utf8');
  assert.match(svg, /<text[^>]*>test_acc vs pretrain_level<\/text>/);
  assert.match(svg, /data-name="finetune"/);
  assert.match(svg, /data-name="pretrain"/);
  assert.ok(svg.indexOf('>leaf<') < svg.indexOf('>basic<') && svg.indexOf('>basic<') < svg.indexOf('>scratch<'), 'levels finest first, scratch last');
  assert.match(svg, /<path d="M[\d.]+,[\d.]+V/, 'error bars');
  const epochSvg = fs.readFileSync(path.join(out, 'test_acc-vs-epoch.svg'), 'utf8');
  for (const s of ['finetune / leaf', 'finetune / basic', 'finetune / scratch']) assert.match(epochSvg, new RegExp(`data-name="${s}"`));
  assert.match(fs.readFileSync(path.join(out, 'dynamics-fisher_trace-vs-step.svg'), 'utf8'), /data-name="finetune \/ leaf"/);
  assert.ok(fs.existsSync(path.join(out, 'dynamics-sharpness_avg-vs-step.svg')));
  assert.equal(fs.existsSync(path.join(out, 'test_acc_hard-vs-epoch.svg')), false, 'no curve without epoch rows carrying the metric');
  for (const f of ['test_acc-vs-pretrain_level', 'test_acc-vs-epoch', 'dynamics-fisher_trace-vs-step']) {
    const png = path.join(out, `${f}.png`);
    assert.ok(fs.statSync(png).size > 1000, `${png} exists and is not empty`);
    assert.deepEqual([...fs.readFileSync(png).subarray(1, 4)].map((c) => String.fromCharCode(c)).join(''), 'PNG');
  }
  assert.match(fs.readFileSync(path.join(out, 'report.md'), 'utf8'), /!\[test_acc-vs-pretrain_level\]\(test_acc-vs-pretrain_level\.png\)/);
});

test('report: a numeric x key not grouped by is averaged per cell; <m>_error is 1 - <m>_acc', () => {
  const runs: FakeRun[] = [];
  for (const freeze of [0, 1, 2]) {
    for (const seed of [0, 1]) {
      runs.push({
        name: `ft-${freeze}-${seed}`,
        config: `seed: ${seed}\nfinetune:\n  freeze: ${freeze}\n`,
        summary: { status: 'completed', stage: 'finetune', trainable_params: 1000 * (3 - freeze), test_acc: 0.5 + 0.1 * freeze + 0.02 * seed },
      });
    }
  }
  const dir = makeRuns(runs);
  const out = path.join(dir, 'rep');
  const r = cli(['report', dir, '--group-by', 'finetune.freeze', '--x', 'trainable_params', '--metric', 'test_error', '--out', out, '--no-png']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /\| 0 +\| 2 +\| 0\.4900 ± 0\.0141 \|/);
  assert.match(r.stdout, /\| 2 +\| 2 +\| 0\.2900 ± 0\.0141 \|/);
  const svg = fs.readFileSync(path.join(out, 'test_error-vs-trainable_params.svg'), 'utf8');
  assert.match(svg, /data-name="0"/);
  assert.match(svg, /<text[^>]*>trainable_params<\/text>/);
  assert.equal(fs.existsSync(path.join(out, 'test_error-vs-trainable_params.png')), false);
});

test('report: --where keeps the runs whose key has the value', () => {
  const dir = granularityRuns();
  const r = cli(['report', dir, '--where', 'stage=finetune', '--group-by', 'pretrain_level', '--metric', 'test_acc', '--out', path.join(dir, 'o'), '--no-png']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /\| leaf +\| superclass \(2\) +\| 3 +\| 0\.8000 ± 0\.1000 \|/);
  assert.doesNotMatch(r.stdout, /0\.3000/);
  assert.match(r.stdout, /9 runs; wrote/);
  const bad = cli(['report', dir, '--where', 'stage=nothing', '--out', path.join(dir, 'o')]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--where 'stage=nothing' keeps no run/);
});

test('report: sweep_stage groups runs by the sweep stage that made them (from sweep.json)', () => {
  const dir = granularityRuns();
  // Runs of two sweep stages with one summary stage ('finetune'): only sweep.json tells them apart.
  const stageOf = (name: string) => (name.includes('leaf') ? 'gradual' : name.includes('basic') ? 'full' : 'other');
  const names = fs.readdirSync(dir).filter((n) => n.startsWith('finetune-level'));
  fs.writeFileSync(path.join(dir, 'sweep.json'), JSON.stringify({ name: 't', runs: Object.fromEntries(names.map((n) => [n, { stage: stageOf(n), command: [] }])) }));
  const r = cli(['report', dir, '--where', 'stage=finetune', '--group-by', 'sweep_stage', '--metric', 'test_acc', '--out', path.join(dir, 'o'), '--no-png']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /\| gradual +\| superclass \(2\) +\| 3 +\| 0\.8000 ± 0\.1000 \|/);
  assert.match(r.stdout, /\| full +\| superclass \(2\) +\| 3 +\| 0\.6500 ± 0\.0500 \|/);
  assert.match(r.stdout, /\| other +\| superclass \(2\) +\| 3 +\| 0\.5000 ± 0\.0000 \|/);
});

test('report: source.<key> groups fine-tuning runs by their source run\'s config', () => {
  const runs: FakeRun[] = [
    { name: 'pre-a', config: 'data:\n  relabel: shuffle_parents\n', summary: { status: 'completed', stage: 'pretrain', test_acc: 0.1 } },
    { name: 'pre-b', config: 'data:\n  relabel: null\n', summary: { status: 'completed', stage: 'pretrain', test_acc: 0.1 } },
  ];
  const ft = (name: string, acc: number) => ({ name, config: 'data:\n  relabel: null\n', summary: { status: 'completed', stage: 'finetune', test_acc: acc } });
  runs.push(ft('ft-a1', 0.9), ft('ft-a2', 0.7), ft('ft-b1', 0.4), ft('ft-s', 0.2));
  const dir = makeRuns(runs);
  const meta = (name: string, from: string | null) => fs.writeFileSync(path.join(dir, name, 'run.json'), JSON.stringify({ stage: 'finetune', from }));
  meta('ft-a1', '../pre-a');
  meta('ft-a2', '../pre-a');
  meta('ft-b1', '../pre-b');
  meta('ft-s', null);
  const r = cli(['report', dir, '--where', 'stage=finetune', '--group-by', 'source.data.relabel', '--metric', 'test_acc', '--out', path.join(dir, 'o'), '--no-png']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /\| shuffle_parents +\| 2 +\| 0\.8000 ± 0\.1414 \|/);
  assert.match(r.stdout, /\| null +\| 1 +\| 0\.4000/);
  assert.match(r.stdout, /\| scratch +\| 1 +\| 0\.2000/);
});

test('report: default grouping finds the keys that split the runs (seeds are averaged over)', () => {
  const dir = granularityRuns();
  const r = cli(['report', dir, '--out', path.join(dir, 'o'), '--no-png']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.split('\n')[0], /^\| stage +\| pretrain_level +\| level \(classes\) +\| n +\| test_acc@superclass +\| test_acc +\| test_acc_hard +\|$/);
});

test('report: pretraining and fine-tuning runs at the same level never share a row; data.cache_dir is not a default grouping key', () => {
  const runs: FakeRun[] = [];
  for (const seed of [0, 1]) {
    const cfg = (stage: string) => `seed: ${seed}\ndata:\n  cache_dir: /tmp/${stage}-${seed}/cache\ntrain:\n  level: top\n`;
    runs.push({ name: `pretrain-top-${seed}`, config: cfg('a'), summary: { status: 'completed', stage: 'pretrain', level: 'superclass', num_classes: 2, pretrain_level: 'superclass', test_acc: 0.9 } });
    runs.push({ name: `finetune-top-${seed}`, config: cfg('b') + 'finetune:\n  freeze: 0\n', summary: { status: 'completed', stage: 'finetune', level: 'superclass', num_classes: 2, pretrain_level: 'superclass', test_acc: 0.7, frozen_blocks: 0 } });
  }
  const dir = makeRuns(runs);
  const r = cli(['report', dir, '--group-by', 'pretrain_level', '--out', path.join(dir, 'o'), '--no-png']);
  assert.equal(r.code, 0, r.stderr);
  const rows = r.stdout.split('\n').filter((l) => /superclass/.test(l) && /\| 2 +\|/.test(l));
  assert.equal(rows.length, 2, r.stdout);
  assert.ok(rows.some((l) => /pretrain/.test(l) && /0\.9000/.test(l)) && rows.some((l) => /finetune/.test(l) && /0\.7000/.test(l)), r.stdout);
  const d = cli(['report', dir, '--out', path.join(dir, 'o2'), '--no-png']);
  assert.equal(d.code, 0, d.stderr);
  assert.doesNotMatch(d.stdout.split('\n')[0], /cache_dir/);
});

test('report: no runs, a key some runs lack, an unknown metric exit 2 saying which', () => {
  const empty = tmpDir();
  fs.mkdirSync(path.join(empty, 'nothing-here'));
  let r = cli(['report', empty]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /no run folders \(folders with config\.yaml\) below/);

  r = cli(['report', path.join(empty, 'missing')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /does not exist/);

  const dir = granularityRuns();
  r = cli(['report', dir, '--group-by', 'pretrain_levle', '--out', path.join(dir, 'o')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--group-by 'pretrain_levle' is not a config or summary key of any run\. Did you mean 'pretrain_level'\?/);

  r = cli(['report', dir, '--group-by', 'frozen_blocks', '--out', path.join(dir, 'o')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--group-by 'frozen_blocks': 2 of 11 runs lack it \(.*pretrain-basic/);

  r = cli(['report', dir, '--metric', 'test_acc_medium', '--out', path.join(dir, 'o')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--metric 'test_acc_medium' is in no run's summary\.json/);

  const unfinished = makeRuns([{ name: 'r', config: 'seed: 0\n' }]);
  r = cli(['report', unfinished]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /none of the 1 run folders .* has completed \(statuses: no summary\.json\)/);
});

test('the chart writer escapes text and draws one group per series with a legend', () => {
  const svg = renderChart({ title: 'a < b & c', xLabel: 'x', yLabel: 'y', series: [{ name: 's<1>', points: [{ x: 1, y: 1, err: 0.1 }, { x: 2, y: 2 }] }, { name: 'two', points: [{ x: 1, y: 0 }] }] });
  assert.match(svg, /a &lt; b &amp; c/);
  assert.equal((svg.match(/<g class="series"/g) ?? []).length, 2);
  assert.match(svg, />s&lt;1&gt;<\/text>/);
  assert.match(svg, /<polyline/);
});

test('a curve spanning orders of magnitude gets a log y axis with power-of-ten ticks', () => {
  assert.equal(wantsLogY([100, 3, 0.01]), true);
  assert.equal(wantsLogY([0.5, 0.9]), false);
  assert.equal(wantsLogY([100, 0, 0.01]), false, 'zero cannot go on a log axis');
  const points = [{ x: 0, y: 100 }, { x: 1, y: 1 }, { x: 2, y: 0.01, err: 0.05 }];
  const svg = renderChart({ title: 't', xLabel: 'step', yLabel: 'fisher_trace', series: [{ name: 'a', points }], logY: true });
  assert.match(svg, /fisher_trace \(log scale\)/);
  const ticks = [...svg.matchAll(/text-anchor="end" dominant-baseline="middle">([^<]+)</g)].map((m) => m[1]);
  assert.deepEqual(ticks, ['0.01', '0.1', '1', '10', '100']);
  // Equal ratios are equal distances: 100 -> 1 spans as far as 1 -> 0.01.
  const cy = [...svg.matchAll(/<circle cx="[^"]+" cy="([^"]+)"/g)].slice(0, 3).map((m) => Number(m[1]));
  assert.ok(Math.abs(cy[1] - cy[0] - (cy[2] - cy[1])) < 0.2, `${cy}`);
  // The linear chart of the same points crowds the two small values together.
  const lin = renderChart({ title: 't', xLabel: 'step', yLabel: 'fisher_trace', series: [{ name: 'a', points }] });
  const ly = [...lin.matchAll(/<circle cx="[^"]+" cy="([^"]+)"/g)].slice(0, 3).map((m) => Number(m[1]));
  assert.ok(ly[2] - ly[1] < (ly[1] - ly[0]) / 10);
});

test('numeric x values over orders of magnitude get a log x axis', () => {
  const series = [{ name: 'a', points: [{ x: 66, y: 0.3 }, { x: 14594, y: 0.4 }, { x: 19546, y: 0.45 }] }];
  const svg = renderChart({ title: 't', xLabel: 'trainable_params', yLabel: 'e', series, logX: true });
  assert.match(svg, /trainable_params \(log scale\)/);
  const ticks = [...svg.matchAll(/text-anchor="middle">(\d+)<\/text>/g)].map((m) => m[1]);
  assert.deepEqual(ticks, ['100', '1000', '10000']);
  const cx = [...svg.matchAll(/<circle cx="([^"]+)"/g)].map((m) => Number(m[1]));
  // 66 -> 14,594 spans far more of the axis than 14,594 -> 19,546 (log distances 2.34 vs 0.13).
  assert.ok((cx[1] - cx[0]) / (cx[2] - cx[1]) > 15, `${cx}`);
});
