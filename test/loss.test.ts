import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { lossOf, smoothedTargets } from '../src/models/loss';
import { coarsenedObjective, multiLevelObjective, plainObjective } from '../src/models/objective';
import { resolveConfig } from '../src/config/load';

test('label smoothing: targets (1 - eps) one-hot + eps / K, and the cross-entropy on them', () => {
  const t = smoothedTargets(Int32Array.of(2, 0), 4, 0.2);
  assert.deepEqual(Array.from(t.dataSync()).map((v) => +v.toFixed(6)), [0.05, 0.05, 0.85, 0.05, 0.85, 0.05, 0.05, 0.05]);
  t.dispose();
  const logits = [[1, 2, 3, 0.5], [0, -1, 2, 1]];
  const labels = Int32Array.of(2, 0);
  // By hand: mean over rows of -sum_j target_j log softmax_j.
  const manual = (eps: number) =>
    logits.reduce((acc, row, i) => {
      const z = Math.log(row.reduce((s, v) => s + Math.exp(v), 0));
      return acc - row.reduce((s, v, j) => s + ((j === labels[i] ? 1 - eps : 0) + eps / 4) * (v - z), 0);
    }, 0) / logits.length;
  const x = tf.tensor2d(logits);
  for (const eps of [0, 0.1, 0.3]) {
    const l = lossOf('xent', x, labels, 4, eps);
    assert.ok(Math.abs(l.dataSync()[0] - manual(eps)) < 1e-5, `eps ${eps}: ${l.dataSync()[0]} vs ${manual(eps)}`);
    l.dispose();
  }
  x.dispose();
  assert.equal(resolveConfig([]).train.label_smoothing, 0);
  assert.throws(() => resolveConfig([{ train: { label_smoothing: 1 } }]));
});

test('coarsened objective: cross-entropy of the summed softmax = cross-entropy of per-group log-sum-exp logits; stable for huge logits', () => {
  // 5 fine classes in 2 coarse ones: {0, 1, 2} -> 0, {3, 4} -> 1.
  const map = Int32Array.of(0, 0, 0, 1, 1);
  const z = [[1, 2, 0.5, -1, 3], [0, 0, 0, 0, 0], [4, -2, 1, 0.5, 0.1]];
  const y = tf.tensor1d([1, 0, 0], 'int32');
  const fine = tf.tensor2d(z);
  const obj = coarsenedObjective(map, 2);
  // Reference: coarse logits are log-sum-exp over each group's fine logits.
  const coarse = tf.tensor2d(z.map((r) => [Math.log(Math.exp(r[0]) + Math.exp(r[1]) + Math.exp(r[2])), Math.log(Math.exp(r[3]) + Math.exp(r[4]))]));
  const got = obj.loss([fine], y).dataSync()[0];
  const want = lossOf('xent', coarse, y, 2).dataSync()[0];
  assert.ok(Math.abs(got - want) < 1e-5, `${got} vs ${want}`);
  // By hand for row 1 (all logits equal): p(coarse 0) = 3/5.
  assert.deepEqual(Array.from(obj.predict([fine]).dataSync()), [1, 0, 0]);
  // Smoothing acts on the coarse targets.
  const sm = coarsenedObjective(map, 2, 0.2).loss([fine], y).dataSync()[0];
  const smWant = lossOf('xent', coarse, y, 2, 0.2).dataSync()[0];
  assert.ok(Math.abs(sm - smWant) < 1e-5);
  // Logits 1000 apart: no overflow, and a confident wrong group gives a large finite loss.
  const huge = tf.tensor2d([[1000, 0, 0, 0, 0], [0, 0, 0, 0, 2000]]);
  const l = obj.loss([huge], tf.tensor1d([1, 1], 'int32')).dataSync()[0];
  assert.ok(Number.isFinite(l) && l > 30, `loss ${l}`);
  // The gradient ignores how probability is shared inside the true group.
  const g = tf.grad((t: tf.Tensor) => obj.loss([t], tf.tensor1d([0], 'int32')))(tf.tensor2d([[2, 2, 2, -5, -5]]));
  const gv = Array.from(g.dataSync());
  assert.ok(Math.abs(gv[0] - gv[1]) < 1e-7 && Math.abs(gv[1] - gv[2]) < 1e-7);
  obj.dispose();

  // Multi-level: weights normalised to 1; each head against its level's labels.
  const heads = [{ numClasses: 5, map: null, weight: 2 }, { numClasses: 2, map, weight: 1 }];
  const multi = multiLevelObjective('xent', heads);
  const fineY = tf.tensor1d([4, 1, 2], 'int32');
  const coarseOut = tf.tensor2d([[0.3, -0.2], [1, 0], [0, 2]]);
  const m = multi.loss([fine, coarseOut], fineY).dataSync()[0];
  const ref = (2 / 3) * lossOf('xent', fine, fineY, 5).dataSync()[0] + (1 / 3) * lossOf('xent', coarseOut, tf.tensor1d([1, 0, 0], 'int32'), 2).dataSync()[0];
  assert.ok(Math.abs(m - ref) < 1e-5, `${m} vs ${ref}`);
  assert.deepEqual(Array.from(multi.predict([fine, coarseOut]).dataSync()), Array.from(plainObjective('xent', 5).predict([fine]).dataSync()));
  multi.dispose();
});
