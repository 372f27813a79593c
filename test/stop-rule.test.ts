import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { cli, metricRows, QUICKSTART, tmpDir } from './helpers';
import { belowFractionOfPeak, metricStopMet, metricStopReason, UnfreezeConfig } from '../src/train/finetune';
import { resolveConfig } from '../src/config/load';

const U = (stop: UnfreezeConfig['stop']): UnfreezeConfig => ({ every: 1, unit: 'epoch', order: 'top-down', start: 0, stop });

test('below_fraction_of_peak fires on a geometric decay that relative_change_below never stops', () => {
  // The early-period study's shape: a peak, then a fall by a constant factor per measurement.
  const trace = [30, 120, 84, 58.8, 41.16, 28.81, 20.17, 14.12];
  const relative = U({ metric: 'fisher_trace', when: 'relative_change_below', value: 0.1, window: 2 });
  const peak = U({ metric: 'fisher_trace', when: 'below_fraction_of_peak', value: 0.3 });
  const firstFiring = (u: UnfreezeConfig) => trace.findIndex((_, i) => metricStopMet(u, trace.slice(0, i + 1)));
  assert.equal(firstFiring(relative), -1, 'a 51 % change every two rows never falls below 10 %');
  // 0.3 x 120 = 36: the first value below it is 28.81 (index 5), not 41.16 or the 30 before the peak.
  assert.equal(firstFiring(peak), 5);
  assert.match(metricStopReason(peak, trace.slice(0, 6)), /fisher_trace 28\.81 fell below 0\.3 x its peak 120\.0/);
  // The rule reads the running maximum: a rise never fires, the first value never fires.
  assert.equal(belowFractionOfPeak([5], 0.99), false);
  assert.equal(belowFractionOfPeak([1, 2, 3, 4], 0.99), false);
  assert.equal(belowFractionOfPeak([1, 4, 3.9], 0.99), true);
  assert.equal(belowFractionOfPeak([1, 4, 3.96], 0.99), false, '3.96 = 0.99 x 4 is not below');
  assert.equal(belowFractionOfPeak([], 0.5), false);
  // A negative sharpness estimate is no peak (it fired at step 0 in the early-period study before this rule).
  assert.equal(belowFractionOfPeak([-0.0115], 0.5), false);
  assert.equal(belowFractionOfPeak([-0.02, -0.01, -0.03], 0.5), false);
  assert.equal(belowFractionOfPeak([-0.02, 0.1, 0.04], 0.5), true);
  // The same rule for sharpness, from the config.
  const cfg = resolveConfig([{ finetune: { unfreeze: { every: 1, stop: { metric: 'sharpness_avg', when: 'below_fraction_of_peak' } } } }]);
  assert.deepEqual(cfg.finetune.unfreeze!.stop, { metric: 'sharpness_avg', when: 'below_fraction_of_peak', value: 0.5 });
  assert.equal(metricStopMet(cfg.finetune.unfreeze!, [0.2, 0.09]), true);
  assert.throws(() => resolveConfig([{ finetune: { unfreeze: { every: 1, stop: { metric: 'fisher_trace', when: 'below_fraction_of_peak', value: 1.5 } } } }]));
});

test('a fine-tuning run stops unfreezing when the Fisher trace falls below a fraction of its peak, and opens nothing after', () => {
  const root = tmpDir();
  const pre = path.join(root, 'pre');
  const CNN = [
    '--set', 'model.arch=cnn-small', '--set', 'model.width=0.25', '--set', 'data.image_size=16', '--set', 'data.synthetic.patch_size=4',
    '--set', 'data.synthetic.branching=[2,2,2]', '--set', 'data.synthetic.train_samples=160', '--set', 'data.synthetic.test_samples=48',
    '--set', 'train.batch_size=32', '--set', 'train.lr=0.05', '--set', 'eval.dynamics_every=0',
  ];
  assert.equal(cli(['pretrain', '--config', QUICKSTART, '--quiet', ...CNN, '--set', 'train.epochs=2', '--run-dir', pre]).code, 0);
  const ft = path.join(root, 'ft');
  const r = cli(['finetune', '--from', pre, '--level', 'top', '--quiet', '--run-dir', ft, '--set', 'train.epochs=6', '--set', 'eval.dynamics_every=2',
    '--set', 'finetune.unfreeze={every: 2, unit: step, order: top-down, stop: {metric: fisher_trace, when: below_fraction_of_peak, value: 0.9}}']);
  assert.equal(r.code, 0, r.stderr);
  const rows = metricRows(ft);
  const trace = rows.filter((x) => x.kind === 'dynamics').map((x) => ({ step: Number(x.step), v: Number(x.fisher_trace) }));
  // Where the rule should fire, from the logged trace itself.
  const fire = trace.findIndex((_, i) => belowFractionOfPeak(trace.slice(0, i + 1).map((t) => t.v), 0.9));
  assert.ok(fire > 0, `the trace never fell 10 % below its peak: ${trace.map((t) => t.v.toPrecision(3)).join(' ')}`);
  const stops = rows.filter((x) => x.kind === 'event' && x.event === 'unfreeze_stop');
  assert.equal(stops.length, 1);
  assert.equal(stops[0].step, trace[fire].step, 'the stop is the event of the first dynamics row below 0.9 x the running peak');
  assert.match(String(stops[0].reason), /fisher_trace .* fell below 0\.9 x its peak/);
  const opens = rows.filter((x) => x.kind === 'event' && x.event === 'unfreeze').map((x) => Number(x.step));
  assert.ok(opens.every((s) => s <= Number(stops[0].step)), `blocks opened after the stop: ${opens}`);
  // What stayed closed stays closed: the final row counts the head plus the blocks opened before the stop.
  const last = rows.filter((x) => x.kind === 'epoch').pop()!;
  assert.equal(last.trainable_blocks, opens.length);
});
