import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { compareTable, isFractionMetric, pairedComparison, signTestP, tInterval, tQuantile975 } from '../src/report/compare';
import { RunRecord } from '../src/report/runs';
import { cli, tmpDir } from './helpers';

test('paired statistics: t quantiles, the exact sign test and the t interval, against hand values', () => {
  assert.equal(tQuantile975(1), 12.706);
  assert.equal(tQuantile975(4), 2.776);
  assert.ok(Math.abs(tQuantile975(60) - 2.0003) < 1e-3);
  assert.ok(Math.abs(tQuantile975(1000) - 1.9623) < 1e-3);
  // 3 of 3 on one side: 2 x 1/8; 4 of 4: 2 x 1/16; 5 of 5: 2 x 1/32; 9 of 10: 2 x 11/1024.
  assert.equal(signTestP(3, 0), 0.25);
  assert.equal(signTestP(0, 4), 0.125);
  assert.equal(signTestP(5, 0), 0.0625);
  assert.ok(Math.abs(signTestP(9, 1) - 22 / 1024) < 1e-12);
  assert.equal(signTestP(2, 2), 1);
  // Differences 1, 2, 3: mean 2, sd 1, half-width 4.303 / sqrt(3).
  const t = tInterval([1, 2, 3]);
  assert.equal(t.mean, 2);
  assert.ok(Math.abs(t.hi - (2 + 4.303 / Math.sqrt(3))) < 1e-12);
});

const run = (dir: string, seed: number, level: string, acc: number, extra: Record<string, unknown> = {}): RunRecord => ({
  dir,
  config: { seed, 'train.level': 'top', 'finetune.freeze': 'all', ...extra },
  summary: { status: 'completed', stage: 'finetune', pretrain_level: level, test_acc: acc },
  meta: {},
  rows: [],
  source: { 'train.level': level, seed },
});

test('paired comparison: pairs by seed and every other setting; interval, RER and verdict', () => {
  // Fine beats coarse on 6 of 6 seeds by 1-3 points: resolved.
  const fine = [0.9, 0.91, 0.92, 0.9, 0.93, 0.91];
  const coarse = [0.88, 0.89, 0.91, 0.89, 0.9, 0.89];
  const runs = fine.flatMap((a, s) => [run(`f${s}`, s, 'leaf', a), run(`c${s}`, s, 'superclass', coarse[s])]);
  // A run with another setting has no partner and is left out.
  runs.push(run('other', 0, 'leaf', 0.1, { 'finetune.freeze': 0 }));
  const r = pairedComparison(runs, { key: 'pretrain_level', a: 'leaf', b: 'superclass' }, 'test_acc');
  assert.equal(r.n, 6);
  const d = fine.map((a, s) => a - coarse[s]);
  const mean = d.reduce((x, y) => x + y, 0) / 6;
  assert.ok(Math.abs(r.diff - mean) < 1e-12);
  assert.equal(r.aAbove, 6);
  assert.ok(r.lo > 0);
  assert.equal(r.verdict, 'leaf better');
  // RER = (err_B - err_A) / err_B with mean errors.
  const errB = 1 - coarse.reduce((x, y) => x + y, 0) / 6;
  assert.ok(Math.abs(r.rer - mean / errB) < 1e-12);
  assert.ok(Math.abs(r.rerLo - r.lo / errB) < 1e-12);
  // Three seeds, all one way: the t interval may exclude 0, but 3 of 3 is p = 0.25: not resolved.
  const three = runs.filter((x) => ['f0', 'c0', 'f1', 'c1', 'f2', 'c2'].includes(x.dir));
  const r3 = pairedComparison(three, { key: 'pretrain_level', a: 'leaf', b: 'superclass' }, 'test_acc');
  assert.equal(r3.n, 3);
  assert.equal(r3.signP, 0.25);
  assert.equal(r3.verdict, 'not resolved');
  // An interval spanning 0: not resolved.
  const mixed = [0.9, 0.88, 0.92, 0.87, 0.9, 0.89].flatMap((a, s) => [run(`f${s}`, s, 'leaf', a), run(`c${s}`, s, 'superclass', 0.9 - (s % 2) * 0.01)]);
  assert.equal(pairedComparison(mixed, { key: 'pretrain_level', a: 'leaf', b: 'superclass' }, 'test_acc').verdict, 'not resolved');
  // Settings that go with the compared key (one value per side) are part of the comparison, not of the pairing.
  const staged = [0, 1, 2, 3, 4, 5].flatMap((sd) => [
    { ...run(`g${sd}`, sd, 'leaf', 0.8 + 0.01 * sd, { 'finetune.unfreeze.every': 1 }), meta: { sweep_stage: 'gradual' } },
    { ...run(`u${sd}`, sd, 'leaf', 0.7 + 0.01 * sd), meta: { sweep_stage: 'full' } },
  ]);
  const rs = pairedComparison(staged, { key: 'sweep_stage', a: 'gradual', b: 'full' }, 'test_acc');
  assert.equal(rs.n, 6);
  assert.deepEqual(rs.treatment, ['finetune.unfreeze.every']);
  assert.ok(Math.abs(rs.diff - 0.1) < 1e-9);
  // As real configs store them: a run without a schedule has `finetune.unfreeze: null`, a gradual run
  // has the schedule's keys with `finetune.unfreeze.stop: null` and no `finetune.unfreeze` key.
  // Null and absent are the same setting, so these still pair (EXPERIMENTS.md section 4's runs did not).
  const schedule = { 'finetune.unfreeze.every': 1, 'finetune.unfreeze.order': 'top-down', 'finetune.unfreeze.stop': null };
  const real = [0, 1, 2, 3, 4].flatMap((sd) => [
    { ...run(`k${sd}`, sd, 'leaf', 0.72 + 0.001 * sd, schedule), meta: { sweep_stage: 'gradual-k1' } },
    { ...run(`F${sd}`, sd, 'leaf', 0.71, { 'finetune.unfreeze': null }), meta: { sweep_stage: 'full' } },
  ]);
  const rr = pairedComparison(real, { key: 'sweep_stage', a: 'gradual-k1', b: 'full' }, 'test_acc');
  assert.equal(rr.n, 5);
  assert.deepEqual(rr.treatment, ['finetune.unfreeze.every', 'finetune.unfreeze.order']);
  assert.deepEqual(rr.pairs.map((p) => [p.a, p.b]), [0, 1, 2, 3, 4].map((sd) => [`k${sd}`, `F${sd}`]));
  // The verdict follows the metric's sense: a lower error is better; a metric without a sense only says which side is higher.
  const errRuns = [0, 1, 2, 3, 4].flatMap((sd) => [
    { ...run(`e3-${sd}`, sd, 'leaf', 0, { 'finetune.freeze': 3 }), summary: { status: 'completed', stage: 'finetune', test_error: 0.3 + 0.01 * sd, align_fine: 0.5 } },
    { ...run(`e0-${sd}`, sd, 'leaf', 0, { 'finetune.freeze': 0 }), summary: { status: 'completed', stage: 'finetune', test_error: 0.4 + 0.012 * sd, align_fine: 0.3 + 0.01 * sd } },
  ]);
  const re = pairedComparison(errRuns, { key: 'finetune.freeze', a: '3', b: '0' }, 'test_error');
  assert.ok(re.hi < 0, 'freeze 3 has the lower error on every pair');
  assert.equal(re.verdict, '3 better');
  assert.equal(pairedComparison(errRuns, { key: 'finetune.freeze', a: '3', b: '0' }, 'align_fine').verdict, '3 higher');
  assert.equal(pairedComparison(errRuns.map((r) => ({ ...r, summary: { ...r.summary, test_acc: 1 - (r.summary.test_error as number) } })), { key: 'finetune.freeze', a: '3', b: '0' }, 'test_acc').verdict, '3 better');
  // Two runs with the same settings on one side: ambiguous, refused naming both.
  assert.throws(() => pairedComparison([...runs, run('dup', 0, 'leaf', 0.5)], { key: 'pretrain_level', a: 'leaf', b: 'superclass' }, 'test_acc'), /'f0' and 'dup' both have/);
  assert.throws(() => pairedComparison(runs, { key: 'pretrain_level', a: 'leaf', b: 'genus' }, 'test_acc'), /no completed run has pretrain_level=genus/);
});

test('report --compare KEY=A,B prints and writes the paired table', () => {
  const root = tmpDir('granular-paired-');
  const write = (name: string, seed: number, level: string, acc: number) => {
    const dir = path.join(root, name);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'config.yaml'), `seed: ${seed}\ntrain:\n  level: top\nfinetune:\n  freeze: all\n`);
    fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify({ status: 'completed', stage: 'finetune', level: 'superclass', num_classes: 2, pretrain_level: level, test_acc: acc }));
    fs.writeFileSync(path.join(dir, 'metrics.jsonl'), '');
  };
  for (let s = 0; s < 3; s++) {
    write(`leaf-${s}`, s, 'leaf', 0.9 + 0.01 * s);
    write(`coarse-${s}`, s, 'superclass', 0.88 + 0.01 * s);
  }
  const out = path.join(root, 'rep');
  const r = cli(['report', root, '--compare', 'pretrain_level=leaf,superclass', '--metric', 'test_acc', '--out', out, '--no-png']);
  assert.equal(r.code, 0, r.stderr);
  // +2 points on each of 3 seeds: interval [+2, +2], RER 2 / 11 = 18.2 %, but 3 of 3 is p = 0.25.
  assert.match(r.stdout, /\| pretrain_level: leaf vs superclass \| test_acc \| 3 \| \+2\.00 \| \[\+2\.00, \+2\.00\] \| 3 \/ 0 \| 0\.250 \| 18\.2 % \| \[18\.2, 18\.2\] % \| not resolved \|/);
  assert.match(fs.readFileSync(path.join(out, 'compare.md'), 'utf8'), /not resolved/);
  assert.match(fs.readFileSync(path.join(out, 'compare.csv'), 'utf8'), /^key,a,b,metric,n/);
  const bad = cli(['report', root, '--compare', 'pretrain_level=leaf', '--out', out, '--no-png']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /expected KEY=A,B/);
});

test('compare table: accuracy differences in points, other metrics in their own units', () => {
  const base = { key: 'k', a: 'x', b: 'y', n: 5, aAbove: 5, aBelow: 0, signP: 0.0625, rer: NaN, rerLo: NaN, rerHi: NaN, verdict: 'x higher', treatment: [], pairs: [] };
  const table = compareTable([
    { ...base, metric: 'test_acc', diff: 0.0123, lo: 0.004, hi: 0.02 },
    { ...base, metric: 'trainable_blocks', diff: -1, lo: -1, hi: -1 },
    { ...base, metric: 'fisher_trace', diff: 0.25, lo: 0.125, hi: 0.375 },
  ]);
  const rows = table.split('\n').slice(2);
  assert.match(rows[0], /\| \+1\.23 \| \[\+0\.40, \+2\.00\] \|/);
  assert.match(rows[1], /\| -1 \| \[-1, -1\] \|/);
  assert.match(rows[2], /\| \+0\.25 \| \[\+0\.125, \+0\.375\] \|/);
  assert.equal(isFractionMetric('ood_acc@superclass'), true);
  assert.equal(isFractionMetric('test_error'), true);
  assert.equal(isFractionMetric('mistake_severity'), false);
});
