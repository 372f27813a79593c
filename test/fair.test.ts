import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { hasConverged } from '../src/measure/convergence';
import { cli, metricRows, QUICKSTART, readJson, tmpDir } from './helpers';

const BASE = ['--config', QUICKSTART, '--quiet', '--set', 'data.synthetic.train_samples=600', '--set', 'data.synthetic.test_samples=200', '--set', 'eval.dynamics_every=0',
  '--set', 'model.activation=relu', '--set', 'model.filters=32'];
const ok = (r: ReturnType<typeof cli>) => assert.equal(r.code, 0, r.stderr);
const summary = (dir: string) => readJson(path.join(dir, 'summary.json'));

test('item 1: converged, train_acc_final and the training budget are recorded; until_converged stops on a plateau; the report flags underfit, unconverged and differently trained sources', () => {
  const root = tmpDir();
  const runs = path.join(root, 'runs');
  const pre = (name: string, args: string[]) => {
    const dir = path.join(runs, 'pre', name);
    ok(cli(['pretrain', ...BASE, ...args, '--run-dir', dir]));
    return dir;
  };
  // A source that learns its 2-class level and trains until the loss is flat (at most 40 epochs).
  const fit = pre('fit', ['--level', 'top', '--set', 'train.epochs=40', '--set', 'train.until_converged={patience: 2}', '--set', 'train.schedule=constant', '--set', 'train.lr=0.3']);
  // One whose learning rate is far too small: its loss is flat from the start, it never learns its 24 classes.
  const underfit = pre('underfit', ['--level', 'leaf', '--set', 'train.epochs=3', '--set', 'train.lr=0.00001']);
  // One stopped while its loss still falls fast.
  const moving = pre('moving', ['--level', 'leaf', '--set', 'train.epochs=3', '--set', 'train.lr=1']);

  const f = summary(fit);
  assert.equal(f.converged, true);
  assert.ok(Number(f.epochs_trained) < 40, `until_converged stopped at epoch ${f.epochs_trained}`);
  assert.ok(Number(f.train_acc_final) > 0.8, `train_acc_final ${f.train_acc_final}`);
  assert.equal(f.budget_images, Number(f.epochs_trained) * Number(f.train_images));
  assert.equal(f.train_images, 540, '600 samples less the 10 % validation hold-out');
  const events = metricRows(fit).filter((r) => r.event === 'converged');
  assert.equal(events.length, 1);
  assert.equal(events[0].epoch, f.epochs_trained);
  assert.equal(metricRows(fit).filter((r) => r.kind === 'epoch').pop()!.epoch, f.epochs_trained);
  // Issue 21, item 4: a loss that stays flat because the learning rate is tiny is not converged.
  assert.equal(summary(underfit).converged, false);
  assert.ok(Number(summary(underfit).train_acc_final) < 0.2, 'the network did not learn its level');
  assert.equal(summary(moving).converged, false);
  // summary.converged is the DESIGN rule applied to the logged training losses.
  for (const dir of [fit, underfit, moving]) {
    const rows = metricRows(dir).filter((r) => r.kind === 'epoch' && Number(r.epoch) >= 1);
    assert.equal(summary(dir).converged, hasConverged(rows.map((r) => Number(r.train_loss)), rows.map((r) => Number(r.lr))), dir);
  }
  // Mistake severity is in every run's summary (item 6): 24 leaves in a 2 x 3 x 4 tree, LCA heights 1..3.
  const sev = Number(summary(moving).test_mistake_severity);
  assert.ok(sev >= 1 && sev <= 3, `test_mistake_severity ${sev}`);
  assert.ok(Number(summary(moving)['test_hdist@5']) > 0);

  for (const [name, src] of [['fit', fit], ['underfit', underfit], ['moving', moving]]) {
    ok(cli(['finetune', '--from', src, '--level', 'top', '--freeze', 'all', '--set', 'train.epochs=1', '--quiet', '--run-dir', path.join(runs, 'probe', name)]));
  }
  const out = path.join(root, 'report');
  const r = cli(['report', path.join(runs, 'probe'), '--group-by', 'pretrain_level', '--group-by', 'source.train.lr', '--metric', 'test_acc', '--out', out, '--no-png']);
  assert.equal(r.code, 0, r.stderr);
  const row = (pre: string, lr: string) => r.stdout.split('\n').find((l) => new RegExp(`^\\| ${pre} +\\| ${lr} +\\|`).test(l)) ?? '';
  assert.match(row('leaf', '0.00001'), /source underfit: train_acc_final 0\.\d{4,} < 0\.8 \(1\/1\)/);
  assert.match(row('leaf', '1'), /source not converged \(1\/1\)/);
  assert.doesNotMatch(row('superclass', '0.3'), /underfit|not converged/);
  // Budgets differ (3 epochs vs the converged run's), so every row shows its source's.
  assert.match(row('superclass', '0.3'), new RegExp(`source budget ${Number(f.budget_images).toLocaleString('en-US')} images`));
  assert.match(r.stdout, /Flag: source underfit/);
  assert.match(r.stdout, /Flag: source not converged/);
  assert.match(r.stdout, /Flag: source budgets differ/);
  const md = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
  assert.match(md, /\| flags/);
  assert.match(md, /\*\*Flag: source underfit\.\*\*/);
  // A stricter threshold flags the good source too; a looser one clears the underfit one.
  const loose = cli(['report', path.join(runs, 'probe'), '--group-by', 'pretrain_level', '--group-by', 'source.train.lr', '--metric', 'test_acc', '--out', out, '--no-png', '--underfit-below', '0.01']);
  assert.doesNotMatch(loose.stdout, /source underfit/);
});

test('train_acc_final is measured on a fixed seeded sample of eval.train_acc_samples training images (all of them when fewer)', () => {
  const root = tmpDir();
  const run = (name: string, samples: number) => {
    const dir = path.join(root, name);
    ok(cli(['pretrain', ...BASE, '--level', 'leaf', '--set', 'train.epochs=2', '--set', `eval.train_acc_samples=${samples}`, '--run-dir', dir]));
    return Number(summary(dir).train_acc_final);
  };
  const all = run('all', 100000);
  const sample = run('sample', 7);
  const again = run('again', 7);
  // 24 classes after 2 epochs: neither 0 nor 1, so the fractions below tell the denominators apart.
  assert.ok(all > 0 && all < 1 && sample > 0 && sample < 1, `${all} ${sample}`);
  // 540 training images: a multiple of 1/540 on all of them, of 1/7 on the sample.
  assert.ok(Math.abs(all * 540 - Math.round(all * 540)) < 1e-9, `${all}`);
  assert.ok(Math.abs(sample * 7 - Math.round(sample * 7)) < 1e-9, `${sample}`);
  assert.equal(again, sample, 'the same seed draws the same sample');
  assert.equal(run('exact', 540), all, 'a sample as large as the training set is all of it');
});
