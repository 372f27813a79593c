import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { makeSplit } from '../src/data/labels/split';
import { buildNetwork } from '../src/models/archs';
import { classify, evalBatchSize } from '../src/measure/predict';
import { makeProbe, probeLoss, sharpness } from '../src/measure/dynamics';
import { initEngine } from '../src/engine/backend';
import { readJson, runWatching, tmpDir } from './helpers';

// The wasm engine (with the native kernels where they are built), as a run would use: on tfjs's
// pure-JS cpu backend the sharpness probes below alone took ~30 s of CPU.
before(async () => {
  await initEngine('wasm');
});

test('eval.batch_size: defaults to the training batch; predictions do not depend on it', async () => {
  assert.equal(evalBatchSize(resolveConfig([parseSets(['train.batch_size=48'])])), 48);
  assert.equal(evalBatchSize(resolveConfig([parseSets(['train.batch_size=48', 'eval.batch_size=7'])])), 7);
  const cfg = resolveConfig([parseSets(['data.synthetic.train_samples=60', 'data.synthetic.test_samples=50', 'model.arch=cnn-small', 'model.width=0.25'])]);
  const ds = await loadDataset(cfg, () => {});
  const split = makeSplit(ds, cfg);
  const net = buildNetwork(cfg, ds.shape, ds.hierarchy.classes.length);
  const whole = await classify(net, ds.test, split.test, ds.shape, 0, 1000);
  const small = await classify(net, ds.test, split.test, ds.shape, 0, 7);
  assert.deepEqual(small.pred, whole.pred);
  for (let i = 0; i < whole.probs.length; i++) assert.ok(Math.abs(small.probs[i] - whole.probs[i]) < 1e-5);
  // The probes too: the loss over chunks of 7 equals the loss over the whole probe.
  const labels = Int32Array.from(split.train, (i) => ds.train.y[i]);
  const whole1 = makeProbe(ds.train.x, ds.shape, split.train, labels, 40, 1, 'xent', 1000);
  const chunked = { ...whole1, batch: 7 };
  assert.ok(Math.abs((await probeLoss(net, chunked)) - (await probeLoss(net, whole1))) < 1e-5);
  const sw = await sharpness(net, whole1, 0.05, 1, 2, 3);
  const sc = await sharpness(net, chunked, 0.05, 1, 2, 3);
  assert.ok(Math.abs(sw.avg - sc.avg) < 1e-4 && Math.abs(sw.worst - sc.worst) < 1e-4, `${JSON.stringify(sw)} vs ${JSON.stringify(sc)}`);
  whole1.x.dispose();
  net.dispose();
});

test('SIGTERM during an evaluation pass ends the run as interrupted (exit 143), not after the pass', async () => {
  const dir = path.join(tmpDir(), 'r');
  // One image per forward pass over 4,000 test images: the first evaluation (before step 1) lasts many seconds.
  const args = ['pretrain', '--quiet', '--run-dir', dir, ...['data.synthetic.train_samples=200', 'data.synthetic.test_samples=4000', 'eval.batch_size=1', 'eval.dynamics_every=0', 'train.epochs=1'].flatMap((s) => ['--set', s])];
  const r = await runWatching(args, (child) => {
    if (!fs.existsSync(path.join(dir, 'env.json'))) return false;
    child.kill('SIGTERM');
    return true;
  });
  assert.equal(r.code, 143, r.stderr);
  const s = readJson(path.join(dir, 'summary.json'));
  assert.equal(s.status, 'interrupted');
  assert.equal(s.signal, 'SIGTERM');
  // The evaluation before step 1 never finished: its row was never written, no step trained.
  const metrics = path.join(dir, 'metrics.jsonl');
  const rows = fs.existsSync(metrics) ? fs.readFileSync(metrics, 'utf8').trim() : '';
  assert.equal(rows, '');
  assert.ok(!fs.existsSync(path.join(dir, 'checkpoint')));
});
