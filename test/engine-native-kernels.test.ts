import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { registerWasmTrainingKernels } from '../src/engine/wasm-kernels';
import { BATCH_NORM_TRAIN, broadcastStrides, loadOneDnn, nativeKernelNames, registerNativeKernels } from '../src/engine/native-kernels';
import { registerNativeBackend } from '../src/engine/native-backend';
import { batchNormTrain, nativeBatchNorm } from '../src/models/batchnorm';
import { Rng } from '../src/util/rng';
import * as fs from 'node:fs';
import { cli, ConvCase, convGridCases, describeConvCase, QUICKSTART, readJson, scaledError, tmpDir } from './helpers';

/** 1e-4 of the larger of 1 and the reference's magnitude. */
const TOLERANCE = 1e-4;

const { addon, why } = loadOneDnn();
/** Every test here needs the addon; without it they skip and say why (CI builds it). */
const skip = addon ? false : `native oneDNN kernels unavailable: ${why}`;

// Registered before the backends initialise, the way src/engine/backend.ts does it.
registerWasmTrainingKernels();
if (addon) registerNativeKernels(2);

/** The backends the native kernels are registered on; every comparison runs on each. */
const BACKENDS = ['wasm', 'native'] as const;

before(async () => {
  if (addon) assert.ok((await registerNativeBackend(2)).native, 'native backend failed to register');
  assert.ok(await tf.setBackend('wasm'), 'wasm backend failed to initialise');
});


function randomValues(rng: Rng, size: number, integers = false): Float32Array {
  // Small integers make ties in max pooling common, to check which one wins.
  return Float32Array.from({ length: size }, () => (integers ? rng.int(4) : rng.normal()));
}

/**
 * Runs `f` on each backend with the native kernels and on cpu; the largest
 * scaled error over its outputs, after asserting each is within tolerance.
 */
async function assertSame(what: string, f: () => tf.Tensor[], backends: readonly string[] = BACKENDS): Promise<number> {
  const run = async (name: string) => {
    await tf.setBackend(name);
    const out = tf.tidy(f);
    const copies = out.map((t) => ({ values: t.dataSync().slice() as Float32Array, shape: t.shape }));
    tf.dispose(out);
    return copies;
  };
  const cpu = await run('cpu');
  let worst = 0;
  for (const backend of backends) {
    const got = await run(backend);
    got.forEach((w, i) => {
      assert.deepEqual(w.shape, cpu[i].shape, `${what} on ${backend}: output ${i} shape`);
      // NaN where the reference has NaN, and nowhere else; then the values.
      const nan = (v: Float32Array) => v.map((e) => (Number.isNaN(e) ? 1 : 0));
      assert.deepEqual(nan(w.values), nan(cpu[i].values), `${what} on ${backend}: output ${i} NaNs`);
      const error = scaledError(w.values.map((e) => (Number.isNaN(e) ? 0 : e)), cpu[i].values.map((e) => (Number.isNaN(e) ? 0 : e)));
      assert.ok(error <= TOLERANCE, `${what} on ${backend}: output ${i} error ${error}`);
      worst = Math.max(worst, error);
    });
  }
  await tf.setBackend('wasm');
  return worst;
}

/** Forward output, dx and dFilter of conv2d under a random upstream gradient. */
async function checkConv(c: ConvCase, rng: Rng): Promise<number> {
  const xShape: [number, number, number, number] = [c.batch, c.height, c.width, c.inChannels];
  const fShape: [number, number, number, number] = [c.kernel, c.kernel, c.inChannels, c.outChannels];
  const { outShape } = tf.backend_util.computeConv2DInfo(xShape, fShape, c.strides, 1, c.pad);
  const x = randomValues(rng, tf.util.sizeFromShape(xShape));
  const filter = randomValues(rng, tf.util.sizeFromShape(fShape));
  const dy = randomValues(rng, tf.util.sizeFromShape(outShape));
  return assertSame(describeConvCase(c), () => {
    const conv = (a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.strides, c.pad);
    const xt = tf.tensor4d(x, xShape);
    const ft = tf.tensor4d(filter, fShape);
    const [dx, dFilter] = tf.grads(conv)([xt, ft], tf.tensor(dy, outShape));
    return [conv(xt, ft), dx, dFilter];
  });
}

test('the native kernels are registered for wasm and the native backend, and run', { skip }, async () => {
  for (const name of nativeKernelNames('wasm')) assert.ok(tf.getKernel(name, 'wasm'), name);
  for (const name of nativeKernelNames('native')) assert.ok(tf.getKernel(name, 'native'), name);
  // The native backend has every cpu kernel, for what is not native.
  for (const k of tf.getKernelsForBackend('cpu')) assert.ok(tf.getKernel(k.kernelName, 'native'), k.kernelName);
  const before = addon!.primitives();
  tf.tidy(() => tf.conv2d(tf.ones([1, 3, 3, 1]) as tf.Tensor4D, tf.ones([2, 2, 1, 1]) as tf.Tensor4D, 1, 'valid').dataSync());
  assert.ok(addon!.primitives() > before, 'a conv of a new shape should have built a oneDNN primitive');
  assert.match(addon!.version(), /^oneDNN \d+\.\d+\.\d+/);
});

test('conv2d forward and gradients match the cpu backend: strides 1/2, same/valid, kernels 1/3/5', { skip }, async (t) => {
  const rng = new Rng(20240701);
  const cases = convGridCases(rng, { sizeSpread: 5, maxIn: 20, maxOut: 20 });
  let worst = 0;
  for (const c of cases) worst = Math.max(worst, await checkConv(c, rng));
  t.diagnostic(`${cases.length} cases, max scaled error ${worst.toExponential(2)}`);
});

test('conv2d matches the cpu backend on the models\' shapes, unequal strides and explicit paddings', { skip }, async (t) => {
  const rng = new Rng(8);
  const cases: ConvCase[] = [
    // cnn-small and resnet8 layers at a small batch.
    { batch: 2, height: 32, width: 32, inChannels: 3, outChannels: 32, kernel: 3, strides: [1, 1], pad: 'same' },
    { batch: 2, height: 32, width: 32, inChannels: 16, outChannels: 32, kernel: 3, strides: [2, 2], pad: 'same' },
    { batch: 1, height: 16, width: 16, inChannels: 32, outChannels: 64, kernel: 1, strides: [2, 2], pad: 'same' },
    { batch: 3, height: 8, width: 8, inChannels: 64, outChannels: 128, kernel: 3, strides: [1, 1], pad: 'same' },
    { batch: 2, height: 7, width: 6, inChannels: 3, outChannels: 4, kernel: 3, strides: [2, 1], pad: 'same' },
    { batch: 1, height: 8, width: 9, inChannels: 2, outChannels: 3, kernel: 3, strides: [1, 2], pad: 'valid' },
    { batch: 2, height: 6, width: 7, inChannels: 2, outChannels: 3, kernel: 3, strides: [1, 1], pad: [[0, 0], [1, 2], [0, 1], [0, 0]] },
    { batch: 2, height: 7, width: 6, inChannels: 3, outChannels: 2, kernel: 3, strides: [2, 2], pad: [[0, 0], [2, 0], [1, 1], [0, 0]] },
    // Strided 1x1 at batch 1 with input channels not a multiple of 16: oneDNN
    // 2.6's own kernel for the weight gradient corrupts the heap on 2 threads.
    { batch: 1, height: 16, width: 16, inChannels: 8, outChannels: 16, kernel: 1, strides: [2, 2], pad: 'same' },
    { batch: 1, height: 32, width: 32, inChannels: 12, outChannels: 16, kernel: 1, strides: [2, 2], pad: 'valid' },
    { batch: 2, height: 9, width: 8, inChannels: 3, outChannels: 5, kernel: 1, strides: [2, 2], pad: [[0, 0], [1, 1], [0, 1], [0, 0]] },
    // Padding wider than the kernel.
    { batch: 2, height: 5, width: 4, inChannels: 2, outChannels: 3, kernel: 1, strides: [1, 1], pad: [[0, 0], [2, 1], [1, 0], [0, 0]] },
  ];
  let worst = 0;
  for (const c of cases) worst = Math.max(worst, await checkConv(c, rng));
  t.diagnostic(`${cases.length} cases, max scaled error ${worst.toExponential(2)}`);
});

test('fused conv2d (bias, relu, linear) matches the cpu backend, with and without a gradient', { skip }, async () => {
  const rng = new Rng(12);
  for (const [stride, pad, activation, withBias] of [
    [1, 'same', 'relu', true],
    [2, 'same', 'linear', false],
    [2, 'valid', 'relu', false],
    [1, 'valid', 'linear', true],
    [1, 'same', 'elu', true], // not native: falls back
  ] as const) {
    const xShape: [number, number, number, number] = [2, 9, 8, 5];
    const fShape: [number, number, number, number] = [3, 3, 5, 7];
    const x = randomValues(rng, tf.util.sizeFromShape(xShape));
    const filter = randomValues(rng, tf.util.sizeFromShape(fShape));
    const bias = randomValues(rng, 7);
    await assertSame(`fused conv2d s${stride} ${pad} ${activation} bias ${withBias}`, () => {
      const f = (a: tf.Tensor, b: tf.Tensor) =>
        tf.fused.conv2d({ x: a as tf.Tensor4D, filter: b as tf.Tensor4D, strides: stride, pad, activation, bias: withBias ? tf.tensor1d(bias) : undefined });
      const xt = tf.tensor4d(x, xShape);
      const ft = tf.tensor4d(filter, fShape);
      const [dx, dFilter] = tf.grads((a: tf.Tensor, b: tf.Tensor) => f(a, b).square().sum())([xt, ft]);
      return [f(xt, ft), dx, dFilter];
    });
  }
});

test('a dilated conv (not native: passed to the replaced kernel) still matches the cpu backend', { skip }, async () => {
  const rng = new Rng(4);
  const x = randomValues(rng, 2 * 9 * 9 * 3);
  const filter = randomValues(rng, 3 * 3 * 3 * 4);
  await assertSame('dilated conv2d', () => [tf.conv2d(tf.tensor4d(x, [2, 9, 9, 3]), tf.tensor4d(filter, [3, 3, 3, 4]), 1, 'same', 'NHWC', 2)]);
});

test('MaxPool and MaxPoolGrad match the cpu backend, ties included: pools 2/3, strides 1/2, same/valid, batch 1-3', { skip }, async (t) => {
  const rng = new Rng(31);
  let cases = 0;
  for (const pool of [2, 3]) {
    for (const stride of [1, 2]) {
      for (const pad of ['same', 'valid'] as const) {
        const shape: [number, number, number, number] = [1 + rng.int(3), pool + 1 + rng.int(6), pool + 1 + rng.int(6), 1 + rng.int(9)];
        const integers = rng.int(2) === 0;
        const x = randomValues(rng, tf.util.sizeFromShape(shape), integers);
        await assertSame(`maxPool ${pool}/${stride} ${pad} x[${shape}]`, () => {
          const xt = tf.tensor4d(x, shape);
          const f = (a: tf.Tensor) => tf.maxPool(a as tf.Tensor4D, pool, stride, pad);
          const dy = tf.tensor(randomValues(new Rng(cases), tf.util.sizeFromShape(f(xt).shape)), f(xt).shape);
          return [f(xt), tf.grad(f)(xt, dy)];
        });
        cases++;
      }
    }
  }
  t.diagnostic(`${cases} cases`);
});

test('Sum and Mean over leading or middle axes match the cpu backend; other reductions fall back', { skip }, async () => {
  const rng = new Rng(2);
  const x = randomValues(rng, 4 * 5 * 6 * 7);
  await assertSame('sum/mean', () => {
    const t = tf.tensor4d(x, [4, 5, 6, 7]);
    // [1, 2] and [1, 2] keepDims: global average pooling and its shape.
    return [t.sum([0, 1, 2]), t.mean([0, 1, 2], true), t.sum(0), t.mean([0, 1]), t.sum(3), t.mean(), t.sum([1, 2]), t.mean([1, 2]), t.mean([1, 2], true), t.sum([0, 2])];
  });
});

test('elementwise Add/Sub/Multiply/RealDiv/SquaredDifference/Maximum/Minimum match the cpu backend, broadcast or not', { skip }, async (t) => {
  const rng = new Rng(17);
  const pairs: Array<[number[], number[]]> = [
    [[3, 5, 4, 6], [3, 5, 4, 6]], // same shape
    [[3, 5, 4, 6], [1, 1, 1, 6]], // batch-norm statistics
    [[1, 1, 1, 6], [3, 5, 4, 6]], // the other way round
    [[2, 40, 40, 24], [24]], // over the threading threshold
    [[2, 40, 40, 24], [2, 40, 40, 24]],
    [[7, 9], []], // scalar
    [[3, 1, 1, 6], [3, 5, 4, 6]], // a mean's gradient (wasm: passed on)
    [[5, 1], [1, 4]], // both broadcast (wasm: passed on)
    [[2, 1, 3, 1, 5], [4, 1, 1, 5]],
  ];
  const ops: Array<[string, (a: tf.Tensor, b: tf.Tensor) => tf.Tensor]> = [
    ['add', tf.add],
    ['sub', tf.sub],
    ['mul', tf.mul],
    ['div', tf.div],
    ['squaredDifference', tf.squaredDifference],
    ['maximum', tf.maximum],
    ['minimum', tf.minimum],
  ];
  for (const [aShape, bShape] of pairs) {
    const a = randomValues(rng, tf.util.sizeFromShape(aShape));
    // Away from zero, so division stays well conditioned.
    const b = randomValues(rng, tf.util.sizeFromShape(bShape)).map((v) => v + Math.sign(v || 1) * 0.5);
    await assertSame(`[${aShape}] op [${bShape}]`, () => ops.map(([, op]) => op(tf.tensor(a, aShape), tf.tensor(b, bShape))));
  }
  // int32 stays on the replaced kernels.
  for (const backend of BACKENDS) {
    await tf.setBackend(backend);
    const ints = tf.tidy(() => tf.add(tf.tensor1d([1, 2, 3], 'int32'), tf.tensor1d([4, 5, 6], 'int32')).arraySync());
    assert.deepEqual(ints, [5, 7, 9]);
  }
  await tf.setBackend('wasm');
  t.diagnostic(`${pairs.length} shape pairs x ${ops.length} ops`);
});

test('FusedBatchNorm matches the cpu backend: per-channel stats as [C] or [1,1,1,C], with and without offset/scale', { skip }, async () => {
  const rng = new Rng(23);
  const cases: Array<[number[], number[], boolean, boolean]> = [
    [[4, 6, 5, 8], [8], true, true],
    [[4, 6, 5, 8], [1, 1, 1, 8], true, true],
    [[2, 30, 30, 16], [16], false, true],
    [[2, 30, 30, 16], [16], true, false],
    [[9, 3], [3], false, false],
    [[4, 6, 5, 8], [6, 5, 8], true, true], // not per-channel: passed on
  ];
  for (const [xShape, statShape, withOffset, withScale] of cases) {
    const C = tf.util.sizeFromShape(statShape);
    const x = randomValues(rng, tf.util.sizeFromShape(xShape));
    const mean = randomValues(rng, C);
    const variance = randomValues(rng, C).map((v) => v * v + 0.1);
    const offset = randomValues(rng, C);
    const scale = randomValues(rng, C);
    await assertSame(`batchNorm x[${xShape}] stats[${statShape}] offset ${withOffset} scale ${withScale}`, () => {
      const s = (v: Float32Array) => tf.tensor(v, statShape);
      return [tf.batchNorm(tf.tensor(x, xShape), s(mean), s(variance), withOffset ? s(offset) : undefined, withScale ? s(scale) : undefined, 1e-5)];
    });
  }
});

test('unary ops (Relu, Step, Neg, Square, Sqrt, Rsqrt, Exp, Log, Abs, Relu6, Sigmoid) match the cpu backend, NaN included', { skip }, async () => {
  const rng = new Rng(41);
  const x = randomValues(rng, 3 * 50 * 41).map((v) => 3 * v);
  x[5] = NaN;
  x[7] = 0;
  const positive = x.map((v) => Math.abs(v) + 0.01);
  await assertSame(
    'unary',
    () => {
      const t = tf.tensor3d(x, [3, 50, 41]);
      const p = tf.tensor3d(positive, [3, 50, 41]);
      return [tf.relu(t), tf.step(t), tf.step(t, 0.25), tf.neg(t), tf.square(t), tf.sqrt(p), tf.rsqrt(p), tf.exp(t), tf.log(p), tf.abs(t), tf.relu6(t), tf.sigmoid(t)];
    },
    ['native'],
  );
});

test('Transpose (ranks 1-5, any permutation, float32 and int32) and Pow by a scalar exponent match the cpu backend exactly', { skip }, async () => {
  const rng = new Rng(43);
  const shapes = [[7], [3, 5], [2, 3, 4], [2, 3, 4, 5], [2, 1, 3, 2, 4]];
  const perms = (n: number): number[][] => (n <= 1 ? [[0]] : perms(n - 1).flatMap((p) => Array.from({ length: n }, (_, i) => [...p.slice(0, i), n - 1, ...p.slice(i)])));
  for (const shape of shapes) {
    const size = tf.util.sizeFromShape(shape);
    const x = randomValues(rng, size);
    const ints = Int32Array.from(x, (v) => Math.round(v * 100));
    const worst = await assertSame(`transpose ${shape}`, () => perms(shape.length).flatMap((perm) => [tf.transpose(tf.tensor(x, shape), perm), tf.transpose(tf.tensor(ints, shape, 'int32'), perm).toFloat()]), ['native']);
    assert.equal(worst, 0, `transpose ${shape} is a permutation: exact`);
  }
  const x = randomValues(rng, 4 * 9 * 5).map((v) => Math.abs(v));
  const worst = await assertSame('pow', () => {
    const t = tf.tensor3d(x, [4, 9, 5]);
    return [tf.pow(t, 3), tf.pow(t, 2.5), tf.pow(t, tf.scalar(-1.5)), tf.pow(t, tf.tensor3d(x, [4, 9, 5]))];
  }, ['native']);
  assert.equal(worst, 0, 'Math.pow on both sides');
});

test('matMul (transposes, batches, broadcast batch) and dense layers (fused bias + relu) match the cpu backend', { skip }, async () => {
  // The same values on every backend: drawn once, in call order.
  const draws: Float32Array[] = [];
  let k = 0;
  const v = (...shape: number[]) => {
    if (k === draws.length) draws.push(randomValues(new Rng(43 + k), tf.util.sizeFromShape(shape)));
    return tf.tensor(draws[k++], shape);
  };
  await assertSame('matMul', () => {
    k = 0;
    const a = v(7, 5);
    const b = v(5, 9);
    const bias = v(9);
    const dy = v(7, 9);
    const dense = (x: tf.Tensor, w: tf.Tensor) => tf.fused.matMul({ a: x as tf.Tensor2D, b: w as tf.Tensor2D, bias, activation: 'relu' });
    const [dx, dw] = tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.mul(dense(x, w), dy).sum())([a, b]);
    return [
      tf.matMul(a, b),
      tf.matMul(v(5, 7), b, true, false),
      tf.matMul(a, v(9, 5), false, true),
      tf.matMul(v(5, 7), v(9, 5), true, true),
      tf.matMul(v(3, 4, 6), v(3, 6, 2)),
      tf.matMul(v(3, 4, 6), v(1, 6, 2)),
      tf.fused.matMul({ a, b, bias, activation: 'linear' }),
      dense(a, b),
      dx,
      dw,
    ];
  });
});

test('broadcastStrides merges axes and zeroes broadcast strides', () => {
  assert.deepEqual(broadcastStrides([4, 5, 6], [4, 5, 6], [4, 5, 6]), { shape: [120], a: [1], b: [1] });
  assert.deepEqual(broadcastStrides([8, 3, 3, 16], [16], [8, 3, 3, 16]), { shape: [72, 16], a: [16, 1], b: [0, 1] });
  assert.deepEqual(broadcastStrides([8, 1, 1, 16], [8, 3, 3, 16], [8, 3, 3, 16]), { shape: [8, 9, 16], a: [16, 0, 1], b: [144, 16, 1] });
  assert.deepEqual(broadcastStrides([], [2, 3], [2, 3]), { shape: [6], a: [0], b: [1] });
  assert.deepEqual(broadcastStrides([5, 1], [1, 4], [5, 4]), { shape: [5, 4], a: [1, 0], b: [0, 1] });
});

/** A batch-norm layer for inputs of `rank` with seeded non-trivial weights (gamma, beta, moving statistics). */
function bnLayer(C: number, seed: number, rank: number): tf.layers.Layer {
  const rng = new Rng(seed);
  const w = [1.5, 0.3, 0.2, 2].map((base) => Float32Array.from({ length: C }, () => base + 0.1 * rng.normal()));
  const l = tf.layers.batchNormalization({ momentum: 0.9, epsilon: 1e-5 });
  l.apply(tf.zeros([...new Array<number>(rank - 1).fill(1), C]), { training: false });
  l.setWeights(w.map((a) => tf.tensor1d(a)));
  return l;
}

test('the fused batch-norm kernel (+ residual + ReLU) matches tfjs-layers on the cpu backend: output, gradients, moving statistics', { skip }, async () => {
  const rng = new Rng(47);
  for (const [shape, residual, relu] of [
    [[4, 6, 5, 8], false, false],
    [[4, 6, 5, 8], false, true],
    [[2, 30, 30, 16], true, true],
    [[9, 3], true, false],
  ] as Array<[number[], boolean, boolean]>) {
    const x = randomValues(rng, tf.util.sizeFromShape(shape)).map((v) => 2 * v + 0.5);
    const r = randomValues(rng, tf.util.sizeFromShape(shape));
    const weighting = randomValues(rng, tf.util.sizeFromShape(shape));
    const C = shape[shape.length - 1];
    const seed = rng.int(1000);
    const results: Record<string, Float32Array[]> = {};
    for (const backend of ['cpu', 'native']) {
      await tf.setBackend(backend);
      assert.equal(nativeBatchNorm(), backend === 'native', `${BATCH_NORM_TRAIN} on ${backend}`);
      const layer = bnLayer(C, seed, shape.length);
      const xt = tf.tensor(x, shape);
      const rt = tf.tensor(r, shape);
      const w = tf.tensor(weighting, shape);
      const vars = layer.trainableWeights.map((v) => (v as unknown as { read(): tf.Variable }).read());
      // The reference: the layer itself in training mode, then add and relu as separate ops.
      const forward = (xi: tf.Tensor, ri: tf.Tensor) => {
        if (backend === 'native') return batchNormTrain(layer, xi, { residual: residual ? ri : undefined, relu });
        let y = layer.apply(xi, { training: true }) as tf.Tensor;
        if (residual) y = tf.add(y, ri);
        return relu ? tf.relu(y) : y;
      };
      const loss = (xi: tf.Tensor, ri: tf.Tensor) => tf.sum(tf.mul(forward(xi, ri), w));
      const [dx, dr] = residual ? tf.grads(loss)([xt, rt]) : tf.grads((xi: tf.Tensor) => loss(xi, rt))([xt]);
      const { grads } = tf.variableGrads(() => loss(xt, rt) as tf.Scalar, vars);
      const y = forward(xt, rt);
      results[backend] = [y, dx, ...(residual ? [dr] : []), ...vars.map((v) => grads[v.name]), ...layer.getWeights().slice(2)].map((t) => t.dataSync().slice() as Float32Array);
    }
    results.cpu.forEach((ref, i) => {
      const error = scaledError(results.native[i], ref);
      assert.ok(error <= TOLERANCE, `x[${shape}] residual ${residual} relu ${relu}: output ${i} error ${error}`);
    });
  }
  await tf.setBackend('wasm');
});

test('a conv + batch norm (training mode) + relu block: forward and gradients match the cpu backend', { skip }, async () => {
  const rng = new Rng(29);
  const x = randomValues(rng, 4 * 8 * 8 * 5);
  const filter = randomValues(rng, 3 * 3 * 5 * 6);
  const gamma = randomValues(rng, 6);
  const beta = randomValues(rng, 6);
  const weighting = randomValues(rng, 4 * 4 * 4 * 6);
  await assertSame('conv-bn-relu block', () => {
    const loss = (f: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
      const y = tf.conv2d(tf.tensor4d(x, [4, 8, 8, 5]), f as tf.Tensor4D, 2, 'same');
      const { mean, variance } = tf.moments(y, [0, 1, 2]);
      const z = tf.relu(tf.batchNorm(y, mean, variance, b as tf.Tensor1D, g as tf.Tensor1D, 1e-5));
      return tf.sum(tf.mul(z, tf.tensor(weighting, [4, 4, 4, 6])));
    };
    const [dFilter, dGamma, dBeta] = tf.grads(loss)([tf.tensor4d(filter, [3, 3, 5, 6]), tf.tensor1d(gamma), tf.tensor1d(beta)]);
    return [dFilter, dGamma, dBeta];
  });
});

test('conv results are identical from call to call (fixed-seed runs repeat exactly)', { skip }, () => {
  const rng = new Rng(6);
  const x = tf.tensor4d(randomValues(rng, 8 * 16 * 16 * 16), [8, 16, 16, 16]);
  const f = tf.tensor4d(randomValues(rng, 3 * 3 * 16 * 32), [3, 3, 16, 32]);
  const grads = () => tf.tidy(() => tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, 'same').square().sum())([x, f]).map((g) => g.dataSync().slice()));
  const first = grads();
  const second = grads();
  first.forEach((g, i) => assert.deepEqual(second[i], g, `gradient ${i}`));
  tf.dispose([x, f]);
});

/** initEngine in a child process: what the engine reports with the given environment. */
function childEngine(env: Record<string, string>, backend = 'wasm'): { backend: string; kernels: string; native?: string; fallbacks: string[] } {
  const engine = path.join(__dirname, '..', 'src', 'engine', 'backend.js');
  const script = `require(${JSON.stringify(engine)}).initEngine('${backend}', 1).then((e) => process.stdout.write(JSON.stringify(e)))`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ...env } });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('the engine reports onednn kernels, and GRANULAR_NATIVE=0 turns them off with a reason', { skip }, () => {
  const on = childEngine({});
  assert.equal(on.kernels, 'onednn');
  assert.match(on.native!, /^oneDNN .*, 1 thread$/);
  const off = childEngine({ GRANULAR_NATIVE: '0' });
  assert.equal(off.kernels, 'wasm');
  assert.equal(off.native, undefined);
  assert.ok(off.fallbacks.some((f) => /GRANULAR_NATIVE=0/.test(f)), off.fallbacks.join('; '));
  // --backend auto: the native backend when the addon loads, else wasm, saying why.
  const auto = childEngine({}, 'auto');
  assert.equal(auto.backend, 'native');
  assert.equal(auto.kernels, 'onednn');
  const autoOff = childEngine({ GRANULAR_NATIVE: '0' }, 'auto');
  assert.equal(autoOff.backend, 'wasm');
  assert.ok(autoOff.fallbacks.some((f) => /^native: .*GRANULAR_NATIVE=0/.test(f)), autoOff.fallbacks.join('; '));
});

test('env.json records the kernel set, and --resume with the other set is refused unless --force', { skip }, () => {
  const dir = path.join(tmpDir(), 'run');
  const args = ['--config', QUICKSTART, '--quiet', '--set', 'model.arch=cnn-small', '--set', 'model.width=0.25', '--set', 'train.epochs=1'];
  const sizes = ['--set', 'data.synthetic.train_samples=64', '--set', 'data.synthetic.test_samples=32', '--set', 'eval.dynamics_every=0'];
  let r = cli(['pretrain', ...args, ...sizes, '--run-dir', dir]);
  assert.equal(r.code, 0, r.stderr);
  const env = readJson<{ kernels: string; native_kernels?: string }>(path.join(dir, 'env.json'));
  assert.equal(env.kernels, 'onednn');
  assert.match(env.native_kernels!, /^oneDNN /);
  fs.rmSync(path.join(dir, 'summary.json'));
  r = cli(['pretrain', '--resume', dir, '--quiet'], { env: { GRANULAR_NATIVE: '0' } });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /\(kernels: onednn then, wasm now\).*npm run build:native.*--force/);
});
