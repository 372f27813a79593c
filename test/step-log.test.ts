/**
 * The training steps' losses and hits, read back in groups (src/train/step-log.ts):
 * hits are counted on the host from the predictions that come back, and a
 * training step runs no Equal kernel (bench/README.md "No synchronous
 * readback": on the CPU backends an Equal in every step slowed the smooth
 * ReLU's gradient down).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { resolveConfig } from '../src/config/load';
import { buildNetwork } from '../src/models/archs';
import { plainObjective } from '../src/models/objective';
import { blockLrScale } from '../src/train/finetune';
import { NamedOptimizer } from '../src/train/optimizer';
import { StepLog } from '../src/train/step-log';
import { TrainableSet } from '../src/train/trainable';

test('StepLog returns every step in order: its loss, and its hits counted against the labels kept on the host', async () => {
  const log = new StepLog();
  const steps = [
    { loss: 2.5, pred: [0, 1, 2, 3], labels: [0, 1, 2, 0] }, // 3 hits
    { loss: Math.fround(0.1), pred: [4, 4], labels: [1, 2] }, // 0 hits, a batch of 2
    { loss: NaN, pred: [5, 6, 7], labels: [5, 6, 7] }, // 3 hits; a non-finite loss comes back as it is
  ];
  const before = tf.memory().numTensors;
  steps.forEach((s, i) => log.push({ b: s.pred.length, epoch: 1, step: i + 1, lr: 0.1 }, { loss: tf.scalar(s.loss), pred: tf.tensor1d(s.pred, 'int32') }, Int32Array.from(s.labels)));
  assert.equal(log.length, 3);
  const got = await log.read();
  assert.deepEqual(
    got.map((r) => [r.step, r.b, r.hits]),
    [
      [1, 4, 3],
      [2, 2, 0],
      [3, 3, 3],
    ],
  );
  assert.equal(got[0].loss, 2.5);
  assert.equal(got[1].loss, Math.fround(0.1));
  assert.ok(Number.isNaN(got[2].loss));
  assert.equal(log.length, 0);
  assert.equal(tf.memory().numTensors, before, 'the log disposes what it was given');
  assert.deepEqual(await log.read(), []);
  // A single pending step reads back too.
  log.push({ b: 2, epoch: 1, step: 4, lr: 0.1 }, { loss: tf.scalar(1), pred: tf.tensor1d([1, 0], 'int32') }, Int32Array.from([1, 1]));
  assert.deepEqual((await log.read()).map((r) => r.hits), [1]);
  // Predictions that do not match the batch are refused (and disposed).
  assert.throws(
    () => log.push({ b: 3, epoch: 1, step: 5, lr: 0.1 }, { loss: tf.scalar(1), pred: tf.tensor1d([1, 0], 'int32') }, Int32Array.from([1, 1, 1])),
    /step 5: 2 predictions and 3 labels for a batch of 3/,
  );
  assert.equal(tf.memory().numTensors, before);
});

test('a training step returns its predicted classes and runs no Equal kernel (hits are counted on the host)', async () => {
  const cfg = resolveConfig([{ seed: 0, model: { arch: 'two-layer-conv', filters: 4, activation: 'smooth_relu' }, data: { image_size: 8, channels: 1 } }], 'the test config');
  const net = buildNetwork(cfg, [8, 8, 1], 3);
  const training = net.blocks.map(() => true);
  const trainable = new TrainableSet(net, training.slice(), blockLrScale(net.blocks.length, 1));
  const objective = plainObjective('xent', 3);
  const optimizer = new NamedOptimizer({ kind: 'sgd', momentum: 0.9, weightDecay: 0 });
  const x = tf.randomNormal([5, 8, 8, 1], 0, 1, 'float32', 1);
  const y = tf.tensor1d([0, 1, 2, 0, 1], 'int32');
  // The step's predictions are the argmax of its own forward pass (before the update).
  const want = tf.tidy(() => net.forward(x, training).argMax(1).dataSync());
  let out: ReturnType<TrainableSet['step']> | null = null;
  const profile = await tf.profile(() => {
    out = trainable.step(x, y, training, objective, optimizer, 0.01);
  });
  const { loss, pred } = out!;
  const kernels = new Set(profile.kernelNames);
  assert.ok(kernels.has('LessEqual'), `the smooth ReLU's gradient runs in the step (kernels: ${[...kernels].join(', ')})`);
  assert.ok(!kernels.has('Equal'), `a training step must not count hits on the device (kernels: ${[...kernels].join(', ')})`);
  assert.equal(pred.dtype, 'int32');
  assert.deepEqual(pred.shape, [5]);
  assert.deepEqual(Array.from(await pred.data()), Array.from(want));
  assert.ok(Number.isFinite((await loss.data())[0]));
  tf.dispose([x, y, loss, pred]);
  optimizer.dispose();
  net.dispose();
});
