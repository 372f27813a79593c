import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { batchNormTrain } from '../src/models/batchnorm';

/** Two identical batch-norm layers with non-trivial gamma, beta and moving statistics. */
function twin(C: number, seed: number): [tf.layers.Layer, tf.layers.Layer] {
  const make = () => tf.layers.batchNormalization({ momentum: 0.9, epsilon: 1e-5 });
  const a = make();
  const b = make();
  const shape = [1, 3, 3, C];
  a.apply(tf.zeros(shape), { training: false });
  b.apply(tf.zeros(shape), { training: false });
  const w = [1.5, 0.3, 0.2, 2].map((base, k) => tf.add(base, tf.mul(0.1, tf.randomUniform([C], -1, 1, 'float32', seed + k))));
  a.setWeights(w);
  b.setWeights(w);
  return [a, b];
}

test('fused training-mode batch norm equals the layer: output, gradients, moving statistics', async () => {
  await tf.setBackend('cpu');
  for (const [shape, seed] of [[[4, 5, 5, 3], 1], [[1, 2, 3, 8], 2], [[7, 1, 1, 2], 3]] as Array<[number[], number]>) {
    const C = shape[3];
    const [layer, fused] = twin(C, seed);
    const x = tf.randomNormal(shape, 0.5, 2, 'float32', seed);
    const target = tf.randomNormal(shape, 0, 1, 'float32', seed + 10);
    // A loss that weights the outputs unevenly, so every gradient term matters.
    const loss = (y: tf.Tensor) => tf.sum(tf.mul(y, target));
    const vars = (l: tf.layers.Layer) => l.trainableWeights.map((w) => (w as unknown as { read(): tf.Variable }).read());
    const ref = tf.grads((xi: tf.Tensor) => loss(layer.apply(xi, { training: true }) as tf.Tensor))([x])[0];
    const refW = tf.variableGrads(() => loss(layer.apply(x, { training: true }) as tf.Tensor) as tf.Scalar, vars(layer));
    const got = tf.grads((xi: tf.Tensor) => loss(batchNormTrain(fused, xi)))([x])[0];
    const gotW = tf.variableGrads(() => loss(batchNormTrain(fused, x)) as tf.Scalar, vars(fused));
    const close = (a: tf.Tensor, b: tf.Tensor, what: string) => {
      const d = tf.max(tf.abs(tf.sub(a, b))).dataSync()[0];
      const m = tf.max(tf.abs(b)).dataSync()[0];
      assert.ok(d <= 1e-4 * Math.max(1, m), `${what} ${shape}: max diff ${d} (scale ${m})`);
    };
    close(batchNormTrain(twin(C, seed)[1], x), twin(C, seed)[0].apply(x, { training: true }) as tf.Tensor, 'output');
    close(got, ref, 'dx');
    close(refW.value, gotW.value, 'loss');
    const gradsByName = (g: Record<string, tf.Tensor>, l: tf.layers.Layer) => l.trainableWeights.map((w) => g[(w as unknown as { read(): tf.Variable }).read().name]);
    gradsByName(gotW.grads, fused).forEach((g, i) => close(g, gradsByName(refW.grads, layer)[i], `d${['gamma', 'beta'][i]}`));
    // Both were called three times in training mode: the moving statistics moved alike.
    const stats = (l: tf.layers.Layer) => l.getWeights().slice(2);
    stats(fused).forEach((s, i) => close(s, stats(layer)[i], ['moving_mean', 'moving_variance'][i]));
    assert.ok(tf.max(tf.abs(tf.sub(stats(fused)[0], twin(C, seed)[1].getWeights()[2]))).dataSync()[0] > 1e-3, 'the moving mean moved');
  }
});
