import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { finetuneHeadSeed } from '../src/train/heads';
import { cli, metricRows, modelWeights, QUICKSTART, readJson, same, tmpDir } from './helpers';

/** Quickstart data (2 superclasses x 3 basic x 4 subclasses) and a plain-ReLU two-layer network: it learns in a few seconds. */
const BASE = ['--config', QUICKSTART, '--quiet', '--set', 'data.synthetic.train_samples=600', '--set', 'data.synthetic.test_samples=200', '--set', 'eval.dynamics_every=0',
  '--set', 'model.activation=relu', '--set', 'model.filters=32'];
const ok = (r: ReturnType<typeof cli>) => assert.equal(r.code, 0, r.stderr);
const summary = (dir: string) => readJson(path.join(dir, 'summary.json'));

test('item 0: a new head is drawn from a stream the source never used, and its seed is recorded', () => {
  const root = tmpDir();
  // The source run's initial weights: a pretraining run of 0 epochs saves them.
  const init = path.join(root, 'init');
  ok(cli(['pretrain', ...BASE, '--level', 'top', '--set', 'train.epochs=0', '--run-dir', init]));
  const src = path.join(root, 'src');
  ok(cli(['pretrain', ...BASE, '--level', 'top', '--set', 'train.epochs=2', '--run-dir', src]));
  const ft = path.join(root, 'ft');
  ok(cli(['finetune', '--from', src, '--level', 'top', '--set', 'train.epochs=0', '--quiet', '--run-dir', ft]));
  const [i, f] = [modelWeights(init), modelWeights(ft)];
  // Same seed, same class count: before this fix the "new" head was the source's initial head, bit for bit.
  assert.ok(!same(f.get('head/kernel')!, i.get('head/kernel')!), 'the new head must not be the head the source started from');
  const s = summary(ft);
  assert.equal(s.head, 'new');
  assert.equal(s.head_seed, finetuneHeadSeed(0));
  assert.notEqual(s.head_seed, summary(src).head_seed);
  assert.equal(typeof summary(src).head_seed, 'number');
  // The blocks are the source's, and the head is reproducible from the recorded seed.
  assert.ok(same(f.get('features_conv/kernel')!, modelWeights(src).get('features_conv/kernel')!));
  const again = path.join(root, 'again');
  ok(cli(['finetune', '--from', src, '--level', 'top', '--set', 'train.epochs=0', '--quiet', '--run-dir', again]));
  assert.ok(same(modelWeights(again).get('head/kernel')!, f.get('head/kernel')!));
  // Another train.seed draws another head.
  const other = path.join(root, 'other');
  ok(cli(['finetune', '--from', src, '--level', 'top', '--set', 'train.epochs=0', '--set', 'train.seed=1', '--quiet', '--run-dir', other]));
  assert.ok(!same(modelWeights(other).get('head/kernel')!, f.get('head/kernel')!));
});

test('item 3: finetune.head=coarsen keeps the fine head and trains it through summed probabilities', () => {
  const root = tmpDir();
  const src = path.join(root, 'leaf');
  ok(cli(['pretrain', ...BASE, '--level', 'leaf', '--set', 'train.epochs=4', '--run-dir', src]));
  const pre = summary(src);
  // Untrained, the coarsened head scores exactly the source's summed-probability reading at the target level.
  const zero = path.join(root, 'zero');
  ok(cli(['finetune', '--from', src, '--level', 'top', '--set', 'finetune.head=coarsen', '--set', 'train.epochs=0', '--quiet', '--run-dir', zero]));
  const z = summary(zero);
  assert.equal(z.test_acc, pre['test_acc@superclass']);
  assert.equal(z.head, 'coarsen');
  assert.equal(z.head_level, 'leaf');
  assert.equal(z.num_classes, 2);
  // The head keeps its 24 outputs; training moves it (a linear probe through the sum) and never the frozen blocks.
  const probe = path.join(root, 'probe');
  ok(cli(['finetune', '--from', src, '--level', 'top', '--set', 'finetune.head=coarsen', '--freeze', 'all', '--set', 'train.epochs=3', '--set', 'train.lr=0.2', '--quiet', '--run-dir', probe]));
  const [w0, w1] = [modelWeights(src), modelWeights(probe)];
  assert.equal(w1.get('head/kernel')!.length, w0.get('head/kernel')!.length, '24 outputs kept');
  assert.ok(!same(w1.get('head/kernel')!, w0.get('head/kernel')!));
  assert.ok(same(w1.get('features_conv/kernel')!, w0.get('features_conv/kernel')!));
  const p = summary(probe);
  assert.ok(Number(p.test_acc) >= Number(z.test_acc) - 0.02, `coarsened training ${p.test_acc} vs untrained ${z.test_acc}`);
  // With gradual unfreezing and the Fisher order: the Fisher is taken on the coarsened distribution.
  const gradual = path.join(root, 'gradual');
  ok(cli(['finetune', '--from', src, '--level', 'top', '--set', 'finetune.head=coarsen', '--set', 'train.epochs=2', '--set', 'eval.dynamics_every=auto',
    '--set', 'finetune.unfreeze={every: 1, order: fisher}', '--quiet', '--run-dir', gradual]));
  const g = summary(gradual);
  assert.ok(Number(g.fisher_trace) > 0 && Number.isFinite(Number(g.fisher_trace)));
  assert.ok(metricRows(gradual).some((r) => r.event === 'unfreeze'));
  // Mistakes: coarsening to the same level, or with a non-cross-entropy loss.
  let r = cli(['finetune', '--from', src, '--level', 'leaf', '--set', 'finetune.head=coarsen', '--quiet', '--run-dir', path.join(root, 'x1')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /the target must be coarser.*use finetune\.head=keep for the same level/s);
  r = cli(['finetune', '--from', src, '--level', 'top', '--set', 'finetune.head=coarsen', '--set', 'train.loss=mse', '--quiet', '--run-dir', path.join(root, 'x2')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /Set train\.loss=xent/);
  // granular eval rebuilds the coarsened head and scores the same.
  r = cli(['eval', probe, '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`test_acc=${Number(p.test_acc).toFixed(4)}`));
});

test('item 4: train.level as a list trains one head per level; fine-tuning keeps or coarsens any of them', () => {
  const root = tmpDir();
  const multi = path.join(root, 'multi');
  ok(cli(['pretrain', ...BASE, '--set', 'train.level=[leaf, basic, superclass]', '--set', 'train.level_weights=[2, 1, 1]', '--set', 'train.epochs=6', '--run-dir', multi]));
  const s = summary(multi);
  assert.equal(s.level, 'leaf+basic+superclass');
  assert.deepEqual(s.levels, ['leaf', 'basic', 'superclass']);
  assert.deepEqual(s.level_weights, [0.5, 0.25, 0.25]);
  for (const k of ['test_acc', 'test_acc@basic', 'test_acc@superclass', 'test_acc_head@basic', 'test_acc_head@superclass', 'test_acc_summed@basic']) assert.equal(typeof s[k], 'number', k);
  // test_acc@<level> is the summed reading of the finest head (DESIGN.md); test_acc_head@<level> the level's own head.
  assert.equal(s['test_acc@superclass'], s['test_acc_summed@superclass']);
  assert.equal(s.multi_level, 'multi_head');
  // Each level's own head learned its level (the superclass features are common to most samples).
  assert.ok(Number(s['test_acc_head@superclass']) > 0.7, `superclass head ${s['test_acc_head@superclass']}`);
  const w = modelWeights(multi);
  assert.equal(w.get('head_basic/kernel')!.length, w.get('head/kernel')!.length / 4, '6 basic classes vs 24 leaves');
  assert.equal(w.get('head_superclass/bias')!.length, 2);
  // keep at the superclass level takes the superclass head: untrained, it scores what that head scored.
  const keep = path.join(root, 'keep');
  ok(cli(['finetune', '--from', multi, '--level', 'top', '--set', 'finetune.head=keep', '--set', 'train.epochs=0', '--quiet', '--run-dir', keep]));
  assert.equal(summary(keep).test_acc, s['test_acc_head@superclass']);
  assert.equal(summary(keep).head_from, 'head_superclass');
  assert.ok(same(modelWeights(keep).get('head/kernel')!, w.get('head_superclass/kernel')!));
  // coarsen starts from the finest head by default, or the one finetune.head_level names.
  const coarsen = path.join(root, 'coarsen');
  ok(cli(['finetune', '--from', multi, '--level', 'top', '--set', 'finetune.head=coarsen', '--set', 'train.epochs=0', '--quiet', '--run-dir', coarsen]));
  assert.equal(summary(coarsen).test_acc, s['test_acc_summed@superclass']);
  const fromBasic = path.join(root, 'basic');
  ok(cli(['finetune', '--from', multi, '--level', 'top', '--set', 'finetune.head=coarsen', '--set', 'finetune.head_level=basic', '--set', 'train.epochs=1', '--quiet', '--run-dir', fromBasic]));
  assert.equal(summary(fromBasic).head_from, 'head_basic');
  // A fine-tuning run from it names its pretraining level by all of its levels.
  assert.equal(summary(coarsen).pretrain_level, 'leaf+basic+superclass');
  // Mistakes exit 2 with what to do.
  let r = cli(['pretrain', ...BASE, '--set', 'train.level=[superclass, leaf]', '--run-dir', path.join(root, 'x1')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /'leaf' is not coarser than 'superclass'.*List the finest level first/);
  r = cli(['pretrain', ...BASE, '--set', 'train.level=[leaf, superclass]', '--set', 'train.level_weights=[1]', '--run-dir', path.join(root, 'x2')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /1 weight\(s\) for 2 level\(s\)/);
  r = cli(['finetune', '--from', multi, '--level', 'top', '--set', 'finetune.head=keep', '--set', 'finetune.head_level=depth:2', '--quiet', '--run-dir', path.join(root, 'x3')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /as many classes as the source's head \(6\)/);
});
