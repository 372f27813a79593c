import { spawnSync } from 'node:child_process';
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { registerNativeBackend } from '../src/engine/native-backend';
import { loadOneDnn, nativeKernelNames } from '../src/engine/native-kernels';
import { engineCapabilities, GELU, GELU_GRAD, LAYER_NORM, LAYER_NORM_GRAD, SOFTMAX_GRAD } from '../src/engine';
import { composedGelu, gelu, softmaxLastAxis } from '../src/models/fused-ops';
import { layerNorm } from '../src/models/layer-norm';
import { TorchLayerNorm } from '../src/models/torch-layers';
import { resolveConfig } from '../src/config/load';
import { buildNetwork } from '../src/models/archs';

const { addon, why } = loadOneDnn();
const skip = addon ? false : `native oneDNN kernels unavailable: ${why}`;

before(async () => {
  if (!addon) return;
  assert.ok((await registerNativeBackend(2)).native);
});

/** The same computation on the native backend and on tfjs's cpu backend: max abs difference (`relative`: of |a - b| / (1 + |b|)). */
async function diff(f: () => tf.Tensor, relative = false): Promise<number> {
  await tf.setBackend('native');
  const a = tf.tidy(f);
  const av = a.dataSync() as Float32Array;
  await tf.setBackend('cpu');
  const b = tf.tidy(f);
  const bv = b.dataSync() as Float32Array;
  tf.dispose([a, b]);
  await tf.setBackend('native');
  assert.equal(av.length, bv.length);
  let m = 0;
  for (let i = 0; i < av.length; i++) m = Math.max(m, Math.abs(av[i] - bv[i]) / (relative ? 1 + Math.abs(bv[i]) : 1));
  return m;
}

test("the ViT's and DenseNet's ops run on native kernels: Softmax, Erf (GELU), Concat, SplitV (its gradient), AvgPoolGrad, BatchMatMul", { skip }, () => {
  const names = nativeKernelNames('native');
  for (const k of [tf.Softmax, tf.Erf, tf.Concat, tf.SplitV, tf.AvgPoolGrad, tf.BatchMatMul]) assert.ok(names.includes(k), k);
});

test('native Softmax, Erf, Concat/SplitV on every axis and AvgPoolGrad equal the cpu kernels', { skip }, async () => {
  const x = () => tf.randomNormal([4, 3, 7, 9], 0, 3, 'float32', 1);
  const y = () => tf.randomNormal([4, 3, 7, 5], 0, 3, 'float32', 2);
  assert.ok((await diff(() => tf.softmax(x()))) <= 1e-7);
  assert.ok((await diff(() => tf.grad((a: tf.Tensor) => tf.softmax(a).mul(tf.range(0, 9)).sum())(x()))) <= 1e-6);
  assert.ok((await diff(() => tf.erf(x()))) <= 1e-6);
  for (const axis of [0, 1, 2, 3]) assert.equal(await diff(() => tf.concat([x(), x().mul(2), x().add(1)], axis)), 0, `concat axis ${axis}`);
  // Uneven widths on the channel axis (DenseNet), forward and backward (SplitV).
  assert.equal(await diff(() => tf.concat([x(), y(), x().slice([0, 0, 0, 0], [4, 3, 7, 1])], 3)), 0);
  assert.equal(await diff(() => tf.grad((a: tf.Tensor) => tf.concat([a, y()], 3).mul(tf.range(0, 14)).sum())(x())), 0);
  assert.equal(await diff(() => tf.concat(tf.split(x(), [1, 2], 1).map((t, i) => t.mul(i + 1)), 1)), 0);
  const img = () => tf.randomNormal([3, 9, 8, 5], 0, 3, 'float32', 4) as tf.Tensor4D;
  assert.ok((await diff(() => tf.grad((a: tf.Tensor) => tf.avgPool(a as tf.Tensor4D, 2, 2, 'valid').square().sum())(img()))) <= 1e-6);
  assert.ok((await diff(() => tf.grad((a: tf.Tensor) => tf.avgPool(a as tf.Tensor4D, 3, 2, 'valid').square().sum())(img()))) <= 1e-6);
});

test('fused LayerNorm (native GranularLayerNorm and its gradient) equals the composed ops on the cpu backend: values and the gradients of x, gamma, beta', { skip }, async () => {
  const D = 24;
  const x = () => tf.add(tf.randomNormal([3, 5, D], 0, 2, 'float32', 5), tf.randomNormal([3, 5, 1], 0, 4, 'float32', 6));
  const gamma = () => tf.randomNormal([D], 1, 0.3, 'float32', 7);
  const beta = () => tf.randomNormal([D], 0, 0.3, 'float32', 8);
  const r = () => tf.randomNormal([3, 5, D], 0, 1, 'float32', 9);
  // layerNorm picks the fused kernels on native (Capabilities.fusedLayerNorm), the composed ops on cpu.
  assert.ok((await diff(() => layerNorm(x(), gamma(), beta(), 1e-6))) <= 1e-5, 'forward');
  for (const i of [0, 1, 2]) {
    const d = await diff(() => tf.grads((a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => layerNorm(a, g, b, 1e-6).mul(r()).sum())([x(), gamma(), beta()])[i]);
    assert.ok(d <= 1e-5, `gradient of input ${['x', 'gamma', 'beta'][i]} differs by ${d}`);
  }
});

test("granular's LayerNorm layer runs as the fused kernels on native and as composed ops on cpu", { skip }, async () => {
  const kernelsOf = async () => {
    const layer = new TorchLayerNorm({ name: `ln_${tf.getBackend()}`, epsilon: 1e-6 });
    const info = await tf.profile(() => tf.grad((a: tf.Tensor) => (layer.apply(a) as tf.Tensor).sum())(tf.ones([2, 3, 8])));
    layer.dispose();
    return new Set(info.kernelNames);
  };
  await tf.setBackend('native');
  assert.ok(engineCapabilities().fusedLayerNorm);
  const native = await kernelsOf();
  assert.ok(native.has(LAYER_NORM) && native.has(LAYER_NORM_GRAD), [...native].join(', '));
  assert.ok(!native.has(tf.Rsqrt), 'no composed LayerNorm on native');
  await tf.setBackend('cpu');
  assert.equal(engineCapabilities().fusedLayerNorm, false);
  const cpu = await kernelsOf();
  assert.ok(!cpu.has(LAYER_NORM) && cpu.has(tf.Rsqrt), [...cpu].join(', '));
  await tf.setBackend('native');
});

test('native Transpose (addon: memcpy runs when the last axis stays, strided otherwise) equals the cpu kernel, float32 and int32', { skip }, async () => {
  const x = () => tf.randomNormal([4, 5, 3, 2, 6], 0, 3, 'float32', 11);
  for (const perm of [[2, 0, 3, 1, 4], [1, 0, 2, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 4, 3], [3, 1, 4, 0, 2]]) {
    assert.equal(await diff(() => tf.transpose(x(), perm)), 0, `float32 perm ${perm}`);
    assert.equal(await diff(() => tf.transpose(x().mul(100).cast('int32'), perm).cast('float32')), 0, `int32 perm ${perm}`);
  }
  assert.equal(await diff(() => tf.transpose(tf.randomNormal([768, 192], 0, 1, 'float32', 12))), 0, 'matrix');
  assert.equal(await diff(() => tf.transpose(tf.range(0, 7))), 0, 'rank 1');
});

test('fused GELU (GranularGelu and its gradient) equals the composed ops on the cpu backend; softmax with GranularSoftmaxGrad equals tf.softmax on cpu', { skip }, async () => {
  const names = nativeKernelNames('native');
  for (const k of [GELU, GELU_GRAD, SOFTMAX_GRAD, tf.Transpose]) assert.ok(names.includes(k), k);
  // Wide enough for both tails of erf and exp; 1e-6 relative is the float32 A&S erf's accuracy.
  const x = () => tf.concat([tf.randomNormal([3, 7, 40], 0, 3, 'float32', 13).reshape([-1]), tf.tensor1d([0, -0.5, 0.5, 6, -6, 12, -12, 30, -30])]);
  const r = () => tf.randomNormal([3 * 7 * 40 + 9], 0, 1, 'float32', 14);
  // gelu picks the fused kernels on native and the composed ops on cpu.
  assert.ok((await diff(() => gelu(x()), true)) <= 1e-6, 'forward');
  assert.ok((await diff(() => tf.grad((a: tf.Tensor) => gelu(a).mul(r()).sum())(x()), true)) <= 1e-6, 'gradient');
  const s = () => tf.randomNormal([4, 3, 9, 17], 0, 3, 'float32', 15);
  const w = () => tf.randomNormal([4, 3, 9, 17], 0, 1, 'float32', 16);
  assert.ok((await diff(() => softmaxLastAxis(s()))) <= 1e-7, 'softmax');
  assert.ok((await diff(() => tf.grad((a: tf.Tensor) => softmaxLastAxis(a).mul(w()).sum())(s()))) <= 1e-6, 'softmax gradient');
  // The composed GELU is tfjs-layers' own activation, op for op.
  const layer = tf.layers.dense({ units: 3, activation: 'gelu', useBias: false, kernelInitializer: 'ones' });
  await tf.setBackend('cpu');
  const v = tf.tensor2d([[-1.5, 0.25], [2, -3]]);
  assert.deepEqual(Array.from((layer.apply(v) as tf.Tensor).dataSync()), Array.from(composedGelu(v.sum(1, true).tile([1, 3])).dataSync()));
  await tf.setBackend('native');
});

test("a ViT's MLP runs GELU as the fused kernels on native, its config still says 'gelu', and attention's softmax gradient is one kernel", { skip }, async () => {
  const cfg = resolveConfig([{ seed: 0, model: { arch: 'vit-tiny', width: 0.25, patch_size: 8 }, data: { image_size: 16, channels: 3 } }], 'test');
  const net = buildNetwork(cfg, [16, 16, 3], 4);
  const fc1 = net.blocks[1].layers.find((l) => l.name === 'block1_mlp_fc1')!;
  assert.equal((fc1.getConfig() as { activation: string }).activation, 'gelu');
  const vars = net.variables().filter((v) => v.trainable).map((v) => v.variable);
  const info = await tf.profile(() => {
    const { value, grads } = tf.variableGrads(() => net.forward(tf.randomNormal([2, 16, 16, 3], 0, 1, 'float32', 17), net.blocks.map(() => true)).square().sum() as tf.Scalar, vars);
    tf.dispose([value, ...Object.values(grads)]);
  });
  const names = new Set(info.kernelNames);
  for (const k of [GELU, GELU_GRAD, SOFTMAX_GRAD]) assert.ok(names.has(k), `${k} not run: ${[...names].join(', ')}`);
  assert.ok(!names.has(tf.Erf), 'no composed GELU');
});

// The addon's GELU and softmax loops exist twice (AVX2+FMA, and plain x86-64 for older
// CPUs; native/onednn.cc VECTOR_MATH). This machine runs the AVX2 ones above; the plain
// ones run the same checks in a child process forced onto them.
const child = process.env.GRANULAR_VECTOR_MATH === 'generic';
test('the plain x86-64 GELU and softmax loops pass the same checks (child process, GRANULAR_VECTOR_MATH=generic)', { skip: skip || child || (process.arch !== 'x64' && 'x86-64 only') }, () => {
  // Without NODE_TEST_CONTEXT (set by the runner we are in) the child reports in TAP on stdout.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const r = spawnSync(process.execPath, ['--test', '--test-reporter', 'tap', '--test-name-pattern', 'fused GELU|native Softmax', __filename], {
    env: { ...env, GRANULAR_VECTOR_MATH: 'generic' },
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /# pass 2\b/, r.stdout);
});
