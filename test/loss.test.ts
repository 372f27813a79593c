import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { lossOf, smoothedTargets } from '../src/train/loss';
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
