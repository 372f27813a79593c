import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { Network } from '../src/models/network';
import { fisherTrace, Probe, sharpness } from '../src/measure/dynamics';
import { corrupt, CORRUPTIONS } from '../src/data/corruptions';
import { Rng } from '../src/util/rng';

tf.enableProdMode();

/** Softmax regression as a Network: a weightless flatten block and a dense head. */
function softmaxRegression(D: number, K: number, seed: number): Network {
  const flatten = tf.layers.flatten({ name: `flat${seed}` });
  const block = {
    name: 'flatten',
    layers: [flatten],
    apply: (x: tf.Tensor) => flatten.apply(x) as tf.Tensor,
    applySymbolic: (x: tf.SymbolicTensor) => flatten.apply(x) as tf.SymbolicTensor,
  };
  const head = tf.layers.dense({ name: 'head', units: K, kernelInitializer: tf.initializers.randomNormal({ stddev: 1, seed }), biasInitializer: tf.initializers.randomNormal({ stddev: 0.5, seed: seed + 1 }) });
  return new Network('softmax-regression', [1, 1, D], [block], head, K);
}

function probeOf(n: number, D: number, K: number, seed: number): Probe {
  const rng = new Rng(seed);
  return { x: tf.tensor4d(Float32Array.from({ length: n * D }, () => rng.normal()), [n, 1, 1, D]), y: Int32Array.from({ length: n }, () => rng.int(K)), loss: 'xent', batch: n };
}

test('Fisher traces equal the closed form of softmax regression: (|x|^2 + 1) |e_y - p|^2 per example', async () => {
  const [n, D, K, seed] = [12, 5, 4, 3];
  const net = softmaxRegression(D, K, seed);
  const probe = probeOf(n, D, K, seed);
  const [W, b] = net.head.getWeights().map((t) => t.arraySync() as number[][] & number[]);
  const xs = probe.x.reshape([n, D]).arraySync() as number[][];
  const probs = xs.map((x) => {
    const z = Array.from({ length: K }, (_, k) => x.reduce((a, v, d) => a + v * W[d][k], b[k]));
    const m = Math.max(...z);
    const e = z.map((v) => Math.exp(v - m));
    const s = e.reduce((a, v) => a + v, 0);
    return e.map((v) => v / s);
  });
  const perExample = (y: number, i: number) => (xs[i].reduce((a, v) => a + v * v, 0) + 1) * probs[i].reduce((a, p, k) => a + ((k === y ? 1 : 0) - p) ** 2, 0);
  const emp = xs.reduce((a, _, i) => a + perExample(probe.y[i], i), 0) / n;
  // The Monte-Carlo labels are drawn from the model's predictive distribution with the same seeded stream.
  const rng = new Rng(9, 31);
  const mc =
    xs.reduce((a, _, i) => {
      let u = rng.next();
      let y = K - 1;
      for (let k = 0; k < K; k++) {
        u -= probs[i][k];
        if (u < 0) {
          y = k;
          break;
        }
      }
      return a + perExample(y, i);
    }, 0) / n;
  const gotEmp = await fisherTrace(net, probe, false, 9);
  const gotMc = await fisherTrace(net, probe, true, 9);
  assert.ok(Math.abs(gotEmp.total - emp) / emp < 1e-4, `empirical ${gotEmp.total} vs ${emp}`);
  assert.ok(Math.abs(gotMc.total - mc) / mc < 1e-4, `Monte-Carlo ${gotMc.total} vs ${mc}`);
  assert.ok(Math.abs(gotEmp.perBlock.head - emp) / emp < 1e-4, 'all of it is in the head');
  // The batch-gradient shortcut |mean g|^2 is a different (much smaller) number.
  const { grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d(probe.y, 'int32'), K), net.forward(probe.x, [false])) as tf.Scalar);
  const shortcut = Object.values(grads).reduce((a, g) => a + g.square().sum().dataSync()[0], 0);
  tf.dispose(Object.values(grads));
  assert.ok(shortcut < 0.5 * emp, `batch shortcut ${shortcut} vs per-example mean ${emp}`);
  probe.x.dispose();
  net.dispose();
});

test('sharpness is 0 at rho = 0, grows with rho, and leaves the weights bit-identical', async () => {
  const net = softmaxRegression(6, 3, 5);
  const probe = probeOf(40, 6, 3, 5);
  const before = net.variables().map((v) => Array.from(v.variable.dataSync()));
  assert.deepEqual(await sharpness(net, probe, 0, 3, 3, 1), { avg: 0, worst: 0 });
  const small = await sharpness(net, probe, 0.05, 8, 3, 1);
  const large = await sharpness(net, probe, 0.3, 8, 3, 1);
  assert.ok(small.worst > 0 && large.worst > small.worst, `worst ${small.worst} -> ${large.worst}`);
  assert.ok(large.avg > small.avg, `avg ${small.avg} -> ${large.avg}`);
  assert.ok(large.worst >= large.avg, 'the worst case is at least the average');
  assert.deepEqual(net.variables().map((v) => Array.from(v.variable.dataSync())), before);
  probe.x.dispose();
  net.dispose();
});

test('corruptions: identity at severity 0, deterministic per seed, in [0, 1], 1 and 3 channels', async () => {
  for (const C of [1, 3]) {
    const shape: [number, number, number] = [12, 12, C];
    const rng = new Rng(C);
    const x = Float32Array.from({ length: 3 * 12 * 12 * C }, () => rng.next());
    for (const kind of CORRUPTIONS) {
      assert.deepEqual(await corrupt(x, shape, kind, 0, 1), x, `${kind} severity 0`);
      const a = await corrupt(x, shape, kind, 3, 1);
      const b = await corrupt(x, shape, kind, 3, 1);
      assert.equal(a.length, x.length, `${kind} keeps the shape (C=${C})`);
      assert.deepEqual(a, b, `${kind} is deterministic`);
      assert.ok(a.every((v) => v >= -1e-6 && v <= 1 + 1e-6), `${kind} stays in [0, 1]`);
      assert.notDeepEqual(a, x, `${kind} changes the image`);
    }
    const std = (v: Float32Array) => {
      const m = v.reduce((s, t) => s + t, 0) / v.length;
      return Math.sqrt(v.reduce((s, t) => s + (t - m) ** 2, 0) / v.length);
    };
    // Contrast shrinks the spread more at higher severity; noise differs per seed.
    assert.ok(std(await corrupt(x, shape, 'contrast', 5, 1)) < std(await corrupt(x, shape, 'contrast', 1, 1)));
    assert.notDeepEqual(await corrupt(x, shape, 'gaussian_noise', 2, 1), await corrupt(x, shape, 'gaussian_noise', 2, 2));
    // Blur averages neighbours: the spread shrinks.
    const blurred = await corrupt(x, shape, 'gaussian_blur', 5, 1);
    assert.ok(std(blurred) < std(x));
  }
});
