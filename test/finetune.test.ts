import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { cli, finalMetrics, metricRows, modelWeights, QUICKSTART, readJson, runUntil, same, tmpDir } from './helpers';
import { blockNames } from '../src/models/archs';
import { fixedStopMet, initialTrainable, metricStopMet, openingOrder, opensAfter, UnfreezeConfig } from '../src/train/finetune';
import { isDynamicsStep } from '../src/measure/evaluate';

const base = ['--config', QUICKSTART, '--quiet'];
/** cnn-small (3 blocks) on 16x16 synthetic images: small enough to train in seconds. */
const CNN = [
  '--set', 'model.arch=cnn-small', '--set', 'model.width=0.25', '--set', 'data.image_size=16', '--set', 'data.synthetic.patch_size=4',
  '--set', 'data.synthetic.branching=[2,2,2]', '--set', 'data.synthetic.train_samples=160', '--set', 'data.synthetic.test_samples=48',
  '--set', 'train.batch_size=32', '--set', 'train.lr=0.05', '--set', 'eval.dynamics_every=0',
];

const U = (o: Partial<UnfreezeConfig>): UnfreezeConfig => ({ every: 1, unit: 'epoch', order: 'top-down', start: 0, stop: null, ...o });

test('unfreezing schedule logic: order, timing, stop rules', () => {
  assert.deepEqual(openingOrder(4, 1, 'top-down', 0), [3, 2, 1]);
  assert.deepEqual(openingOrder(4, 1, 'bottom-up', 0), [1, 2, 3]);
  assert.deepEqual([...openingOrder(5, 0, 'random', 7)].sort(), [0, 1, 2, 3, 4]);
  assert.deepEqual(openingOrder(5, 0, 'random', 7), openingOrder(5, 0, 'random', 7));
  assert.deepEqual(initialTrainable(4, 0, U({ start: 1 }), 0), [false, false, false, true]);
  assert.deepEqual(initialTrainable(4, 0, U({ order: 'bottom-up', start: 2 }), 0), [true, true, false, false]);
  assert.deepEqual(initialTrainable(3, 1, null, 0), [false, true, true]);
  // every 2 epochs of 5 steps: after steps 10, 20, ...; every 3 steps: after 3, 6, ...
  const after = (u: UnfreezeConfig) => Array.from({ length: 25 }, (_, s) => s).filter((s) => opensAfter(u, s, 5));
  assert.deepEqual(after(U({ every: 2 })), [10, 20]);
  assert.deepEqual(after(U({ every: 3, unit: 'step' })), [3, 6, 9, 12, 15, 18, 21, 24]);
  assert.equal(fixedStopMet(U({ stop: { step: 7 } }), 6, 5), false);
  assert.equal(fixedStopMet(U({ stop: { step: 7 } }), 7, 5), true);
  assert.equal(fixedStopMet(U({ stop: { epoch: 2 } }), 10, 5), true);
  const rule = U({ stop: { metric: 'fisher_trace', when: 'relative_change_below', value: 0.05, window: 2 } });
  assert.equal(metricStopMet(rule, [10, 5]), false, 'not enough history');
  assert.equal(metricStopMet(rule, [10, 5, 2]), false, '80% change');
  assert.equal(metricStopMet(rule, [10, 5, 9.7]), true, '3% change over 2 measurements');
  // Dynamics rows: half-way through epoch 1, then epochs 1, 2, 4, 8, 16, and the last.
  const rows = Array.from({ length: 201 }, (_, s) => s).filter((s) => isDynamicsStep('auto', s, 10, 200)).map((s) => s / 10);
  assert.deepEqual(rows, [0, 0.5, 1, 2, 4, 8, 16, 20]);
  assert.deepEqual(Array.from({ length: 11 }, (_, s) => s).filter((s) => isDynamicsStep(4, s, 5, 10)), [0, 4, 8, 10]);
  assert.equal(isDynamicsStep(0, 0, 5, 10), false);
});

test('gradual unfreezing top-down, every epoch: blocks open in order, trainable params per phase, resume mid-schedule bit-identical', async () => {
  const root = tmpDir();
  const pre = path.join(root, 'pre');
  let r = cli(['pretrain', ...base, ...CNN, '--set', 'train.epochs=2', '--run-dir', pre]);
  assert.equal(r.code, 0, r.stderr);
  const args = ['finetune', '--from', pre, '--level', 'top', '--set', 'train.epochs=5', '--set', 'data.synthetic.train_samples=160', '--set', 'finetune.unfreeze={every: 1, unit: epoch, order: top-down, start: 0}', '--quiet'];
  const whole = path.join(root, 'whole');
  r = cli([...args, '--run-dir', whole]);
  assert.equal(r.code, 0, r.stderr);
  const rows = metricRows(whole);
  const events = rows.filter((x) => x.kind === 'event');
  assert.deepEqual(events.map((e) => e.block), ['block3', 'block2', 'block1']);
  const stepsPerEpoch = Number(rows.find((x) => x.kind === 'epoch' && x.epoch === 1)!.step);
  assert.deepEqual(events.map((e) => e.step), [1, 2, 3].map((k) => k * stepsPerEpoch));
  // Parameters per phase: head only, then + block3, + block2, + block1.
  const w = modelWeights(whole);
  const count = (prefix: string) => [...w.entries()].filter(([n]) => n.startsWith(prefix)).reduce((a, [, v]) => a + v.length, 0);
  const head = count('head/');
  const phases = [head, head + count('block3_'), head + count('block3_') + count('block2_'), head + count('block3_') + count('block2_') + count('block1_')];
  const epochRows = rows.filter((x) => x.kind === 'epoch' && Number(x.epoch) >= 1);
  // The row of epoch e reports the state after its last step (a block opens after epochs 1, 2, 3).
  assert.deepEqual(epochRows.map((x) => x.trainable_params), [phases[1], phases[2], phases[3], phases[3], phases[3]]);
  assert.equal(rows[0].trainable_params, phases[0]);
  // Kill mid-schedule (after epoch 2's checkpoint) and resume: identical to the uninterrupted run.
  const cut = path.join(root, 'cut');
  const k = await runUntil([...args, '--set', 'data.synthetic.train_samples=160', '--run-dir', cut], cut, 2, 'SIGKILL');
  if (k.signal === 'SIGKILL') {
    const res = cli(['finetune', '--resume', cut, '--quiet']);
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(finalMetrics(cut), finalMetrics(whole));
    const b = modelWeights(cut);
    for (const [n, v] of w) assert.ok(same(v, b.get(n)!), `${n} differs after resume`);
    assert.deepEqual(metricRows(cut).filter((x) => x.kind === 'event').map((e) => [e.block, e.step]), events.map((e) => [e.block, e.step]));
  } else {
    assert.fail('the fine-tuning run finished before it could be killed; make it longer');
  }
});

test('transfer: frozen_only re-initialises exactly the blocks that are not frozen, from their own seed stream', () => {
  const root = tmpDir();
  const pre = path.join(root, 'pre');
  assert.equal(cli(['pretrain', ...base, ...CNN, '--set', 'train.epochs=2', '--run-dir', pre]).code, 0);
  // A pretrain run with 0 epochs saves the seed's initial weights: the source's own start.
  const init = path.join(root, 'init');
  assert.equal(cli(['pretrain', ...base, ...CNN, '--set', 'train.epochs=0', '--run-dir', init]).code, 0);
  const ft = path.join(root, 'ft');
  const r = cli(['finetune', '--from', pre, '--level', 'top', '--freeze', '1', '--set', 'finetune.transfer=frozen_only', '--set', 'train.epochs=0', '--quiet', '--run-dir', ft]);
  assert.equal(r.code, 0, r.stderr);
  const reinitSeed = Number(readJson(path.join(ft, 'summary.json')).reinit_seed);
  assert.ok(Number.isInteger(reinitSeed) && reinitSeed > 0, `summary.json reinit_seed ${reinitSeed}`);
  // The architecture's initialisation drawn with the recorded seed: what the unfrozen blocks must hold.
  const fresh = path.join(root, 'fresh');
  assert.equal(cli(['pretrain', ...base, ...CNN, '--set', 'train.epochs=0', '--set', `train.seed=${reinitSeed}`, '--run-dir', fresh]).code, 0);
  const [p, i, f, n0] = [modelWeights(pre), modelWeights(init), modelWeights(ft), modelWeights(fresh)];
  for (const [n, v] of f) {
    if (n.startsWith('head/')) continue;
    const frozen = n.startsWith('block1_');
    assert.ok(same(v, frozen ? p.get(n)! : n0.get(n)!), `${n} should come from the ${frozen ? 'pretrained' : 'freshly drawn'} network`);
    assert.ok(!same(p.get(n)!, i.get(n)!), `${n}: pretraining must have changed it for this test to mean anything`);
    // Not the source's own starting weights, which its trained weights still resemble (issue 21, item 2).
    if (!frozen && !n.includes('moving') && !n.includes('gamma') && !n.includes('beta') && !n.includes('bias')) assert.ok(!same(v, i.get(n)!), `${n} must not be the source's initial weights`);
  }
  assert.deepEqual(blockNames('cnn-small'), ['block1', 'block2', 'block3']);
});

test('a gradual-unfreezing run and a full fine-tuning run both log every measure; OOD under generator shifts', () => {
  const root = tmpDir();
  const pre = path.join(root, 'pre');
  assert.equal(cli(['pretrain', ...base, ...CNN, '--set', 'train.epochs=2', '--run-dir', pre]).code, 0);
  const common = ['--level', 'top', '--set', 'train.epochs=3', '--set', 'eval.dynamics_every=auto', '--set', 'eval.ood_synthetic=[weak_common, more_noise]', '--set', 'eval.ood_severities=[1, 3]', '--quiet'];
  for (const [name, extra] of [['gradual', ['--set', 'finetune.unfreeze={every: 1, order: fisher, stop: {metric: fisher_trace, value: 0.05, window: 1}}']], ['full', ['--freeze', '0']]] as const) {
    const dir = path.join(root, name);
    const r = cli(['finetune', '--from', pre, ...common, ...extra, '--run-dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    const s = readJson(path.join(dir, 'summary.json'));
    for (const k of ['fisher_trace', 'fisher_trace_emp', 'fisher_trace@block1', 'fisher_trace@head', 'sharpness_avg', 'sharpness_worst', 'weight_dist@block3', 'ood_acc', 'ood_acc@weak_common', 'ood_acc@more_noise:3']) {
      assert.equal(typeof s[k], 'number', `${name}: summary.${k}`);
    }
    assert.ok(Number(s.fisher_trace) > 0, `${name}: fisher_trace ${s.fisher_trace}`);
    assert.ok(Number(s.sharpness_worst) >= 0, `${name}: sharpness_worst ${s.sharpness_worst}`);
    const dyn = metricRows(dir).filter((x) => x.kind === 'dynamics');
    assert.ok(dyn.length >= 4, `${name}: ${dyn.length} dynamics rows`);
    assert.equal(dyn[0].step, 0);
    // At step 0 the fine-tuned weights are the pretrained ones: distance 0.
    assert.equal(dyn[0]['weight_dist@block1'], 0);
  }
});

test('the frozen-prefix cache gives the same training as the uncached path', () => {
  const root = tmpDir();
  const pre = path.join(root, 'pre');
  assert.equal(cli(['pretrain', ...base, ...CNN, '--set', 'train.epochs=1', '--run-dir', pre]).code, 0);
  const runs: Array<Array<Record<string, unknown>>> = [];
  for (const cache of ['1', '0']) {
    const dir = path.join(root, `ft${cache}`);
    const r = cli(['finetune', '--from', pre, '--level', 'top', '--freeze', '2', '--set', 'train.epochs=3', '--quiet', '--run-dir', dir], { env: { GRANULAR_PREFIX_CACHE: cache } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readJson(path.join(dir, 'env.json')).prefix_cached, cache === '1');
    runs.push(metricRows(dir).filter((x) => x.kind === 'epoch'));
  }
  runs[0].forEach((row, i) => {
    for (const k of ['train_loss', 'train_acc', 'val_acc', 'test_acc']) {
      assert.ok(Math.abs(Number(row[k] ?? 0) - Number(runs[1][i][k] ?? 0)) < 1e-5, `epoch ${row.epoch} ${k}: ${row[k]} vs ${runs[1][i][k]}`);
    }
  });
});
