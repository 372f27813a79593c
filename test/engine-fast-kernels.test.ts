import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { registerWasmTrainingKernels } from '../src/engine/wasm-kernels';
import { Rng } from '../src/util/rng';
import { scaledError } from './helpers';

/** 1e-4 of the larger of 1 and the reference's magnitude. */
const TOLERANCE = 1e-4;

registerWasmTrainingKernels();

before(async () => {
  assert.ok(await tf.setBackend('wasm'), 'wasm backend failed to initialise');
});

function randomValues(rng: Rng, size: number, integers = false): Float32Array {
  // Small integers make ties in max pooling common, to check which one wins.
  return Float32Array.from({ length: size }, () => (integers ? rng.int(4) : rng.normal()));
}

/** Runs `f` on wasm and on cpu; returns both results' values and shapes. */
async function onBoth(f: () => tf.Tensor | tf.Tensor[]): Promise<{ wasm: tf.Tensor[]; cpu: tf.Tensor[] }> {
  const run = async (name: string) => {
    await tf.setBackend(name);
    const out = tf.tidy(f);
    const list = Array.isArray(out) ? out : [out];
    // Copies that outlive the backend switch.
    const copies = list.map((t) => ({ values: t.dataSync().slice(), shape: t.shape, dtype: t.dtype }));
    tf.dispose(list);
    return copies;
  };
  const wasm = await run('wasm');
  const cpu = await run('cpu');
  await tf.setBackend('wasm');
  const toTensors = (xs: Array<{ values: tf.TypedArray; shape: number[]; dtype: tf.DataType }>) => xs.map((x) => tf.tensor(x.values, x.shape, x.dtype));
  return { wasm: toTensors(wasm), cpu: toTensors(cpu) };
}

async function assertSame(what: string, f: () => tf.Tensor | tf.Tensor[]): Promise<number> {
  const { wasm, cpu } = await onBoth(f);
  let worst = 0;
  wasm.forEach((w, i) => {
    assert.deepEqual(w.shape, cpu[i].shape, `${what}: output ${i} shape`);
    assert.equal(w.dtype, cpu[i].dtype, `${what}: output ${i} dtype`);
    const error = scaledError(w.dataSync(), cpu[i].dataSync());
    assert.ok(error <= TOLERANCE, `${what}: output ${i} error ${error}`);
    worst = Math.max(worst, error);
  });
  tf.dispose([...wasm, ...cpu]);
  return worst;
}

test('the fast kernels are registered for wasm', () => {
  for (const name of ['Tile', 'MaxPoolGrad', 'Sum', 'Mean']) assert.ok(tf.getKernel(name, 'wasm'), name);
});

test('UnsortedSegmentSum (the gradient of gather, which the coarsen objective needs) equals the cpu backend', async () => {
  const rng = new Rng(43);
  for (const [rows, inner, segments] of [[7, 1, 3], [12, 5, 4], [9, 3, 9]] as const) {
    const values = randomValues(rng, rows * inner);
    // Ids include repeats, an empty segment and ones out of range (skipped by both).
    const ids = Int32Array.from({ length: rows }, (_, i) => (i % 4 === 3 ? (i % 8 === 3 ? -1 : segments) : rng.int(segments - 1)));
    await assertSame(`unsortedSegmentSum ${rows}x${inner} into ${segments}`, () => tf.unsortedSegmentSum(tf.tensor2d(values, [rows, inner]), tf.tensor1d(ids, 'int32'), segments));
    await assertSame(`int32 ${rows}x${inner}`, () => tf.unsortedSegmentSum(tf.tensor2d(Int32Array.from(values, (v) => Math.round(v * 10)), [rows, inner], 'int32'), tf.tensor1d(ids, 'int32'), segments));
  }
  // Through gather's gradient, as models/objective.ts coarsenedLogProbs takes it.
  const logits = randomValues(rng, 15);
  await assertSame('grad of gather', () => tf.grad((l: tf.Tensor) => tf.gather(l, tf.tensor1d([0, 2, 2, 4], 'int32'), 1).square().sum())(tf.tensor2d(logits, [3, 5])));
});

test('Tile equals the cpu backend for ranks 1-5, float32, int32 and bool', async (t) => {
  const rng = new Rng(41);
  let cases = 0;
  for (let rank = 1; rank <= 5; rank++) {
    for (let k = 0; k < 6; k++) {
      const shape = Array.from({ length: rank }, () => 1 + rng.int(4));
      const reps = Array.from({ length: rank }, () => 1 + rng.int(3));
      const values = randomValues(rng, tf.util.sizeFromShape(shape), true);
      for (const dtype of ['float32', 'int32', 'bool'] as const) {
        // bool from a comparison: the stock wasm Cast to bool keeps the values (2 stays 2).
        const input = () => (dtype === 'bool' ? tf.tensor(values, shape).greater(1) : tf.tensor(values, shape).cast(dtype));
        await assertSame(`tile ${dtype} [${shape}] x [${reps}]`, () => tf.tile(input(), reps));
        cases++;
      }
    }
  }
  // The batch-norm gradient's case, and a zero repeat.
  const perChannel = randomValues(rng, 16);
  await assertSame('tile [1,1,1,16] to [64,32,32,16]', () => tf.tile(tf.tensor(perChannel, [1, 1, 1, 16]), [64, 32, 32, 1]));
  await assertSame('tile with a zero repeat', () => tf.tile(tf.tensor(perChannel.subarray(0, 6), [2, 3]), [0, 2]));
  t.diagnostic(`${cases + 2} cases`);
});

test('Sum and Mean equal the cpu backend over leading and other axes, keepDims or not', async (t) => {
  const rng = new Rng(42);
  const axesOf: Array<(rank: number) => number | number[]> = [
    (r) => Array.from({ length: r - 1 }, (_, i) => i), // all but the last: batch norm
    () => 0,
    () => [1, 0],
    (r) => r - 1, // innermost: the stock kernel
    (r) => [...new Set([1, r - 1])], // not leading: the stock kernel
    () => -1,
  ];
  let worst = 0;
  let cases = 0;
  for (let rank = 2; rank <= 4; rank++) {
    for (const axesFor of axesOf) {
      for (const keepDims of [false, true]) {
        const shape = Array.from({ length: rank }, () => 1 + rng.int(6));
        const axis = axesFor(rank);
        const values = randomValues(rng, tf.util.sizeFromShape(shape));
        worst = Math.max(worst, await assertSame(`sum [${shape}] axis ${axis} keepDims ${keepDims}`, () => tf.sum(tf.tensor(values, shape), axis, keepDims)));
        worst = Math.max(worst, await assertSame(`mean [${shape}] axis ${axis} keepDims ${keepDims}`, () => tf.mean(tf.tensor(values, shape), axis, keepDims)));
        cases += 2;
      }
    }
  }
  // int32 goes to the stock kernel and stays int32; a full reduction too.
  await assertSame('sum int32 over axis 0', () => tf.sum(tf.tensor([[1, 2], [3, 4]], [2, 2], 'int32'), 0));
  await assertSame('mean over every axis', () => tf.mean(tf.tensor([[1, 2], [3, 5]])));
  // A batch-norm sized reduction, where float32 accumulation would drift.
  const big = randomValues(rng, 64 * 32 * 32 * 16);
  worst = Math.max(worst, await assertSame('sum [64,32,32,16] over [0,1,2]', () => tf.sum(tf.tensor(big, [64, 32, 32, 16]), [0, 1, 2])));
  worst = Math.max(worst, await assertSame('mean [64,32,32,16] over [0,1,2]', () => tf.mean(tf.tensor(big, [64, 32, 32, 16]), [0, 1, 2], true)));
  t.diagnostic(`${cases + 4} cases, max scaled error ${worst.toExponential(2)}`);
});

test('MaxPoolGrad equals the cpu backend: windows 1-3, strides 1/2, same/valid, batch 1-3, with ties', async (t) => {
  const rng = new Rng(43);
  let worst = 0;
  let cases = 0;
  for (const filter of [1, 2, 3]) {
    for (const stride of [1, 2]) {
      for (const pad of ['same', 'valid'] as const) {
        for (const variant of [0, 1, 2]) {
          const batch = variant === 0 ? 1 : 2 + rng.int(2);
          const height = filter + rng.int(5);
          const width = filter + rng.int(5);
          const channels = 1 + rng.int(5);
          const shape = [batch, height, width, channels];
          const values = randomValues(rng, tf.util.sizeFromShape(shape), variant === 2);
          const what = `maxPool grad x[${shape}] window ${filter} stride ${stride} ${pad}${variant === 2 ? ' (ties)' : ''}`;
          worst = Math.max(
            worst,
            await assertSame(what, () => {
              const x = tf.tensor4d(values, shape as [number, number, number, number]);
              const f = (v: tf.Tensor) => tf.maxPool(v as tf.Tensor4D, filter, stride, pad);
              const y = f(x);
              const dy = tf.tensor(randomValues(new Rng(cases), y.size), y.shape);
              return [y, tf.grad(f)(x, dy)];
            }),
          );
          cases++;
        }
      }
    }
  }
  // cnn-small's first pooling layer.
  const big = randomValues(rng, 64 * 32 * 32 * 32);
  await assertSame('maxPool grad x[64,32,32,32] window 2 stride 2', () => {
    const x = tf.tensor4d(big, [64, 32, 32, 32]);
    return tf.grad((v: tf.Tensor) => tf.maxPool(v as tf.Tensor4D, 2, 2, 'valid').square().sum())(x);
  });
  t.diagnostic(`${cases + 1} cases, max scaled error ${worst.toExponential(2)}`);
});

test('a conv + batch norm + max pool block has the same loss gradients on wasm and cpu', async (t) => {
  const rng = new Rng(44);
  for (const batch of [1, 3]) {
    const inputs = randomValues(rng, batch * 8 * 8 * 3);
    const init = (seed: number) => ({ kernelInitializer: tf.initializers.glorotUniform({ seed }) });
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [8, 8, 3], filters: 4, kernelSize: 3, strides: 2, padding: 'same', useBias: false, ...init(1) }),
        tf.layers.batchNormalization({ momentum: 0.9, epsilon: 1e-5 }),
        tf.layers.reLU(),
        tf.layers.maxPooling2d({ poolSize: 2 }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 3, ...init(2) }),
      ],
    });
    const labels = tf.oneHot(tf.tensor1d(Array.from({ length: batch }, (_, i) => i % 3), 'int32'), 3);
    const worst = await assertSame(`batch ${batch}`, () => {
      const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(labels, model.apply(tf.tensor4d(inputs, [batch, 8, 8, 3]), { training: true }) as tf.Tensor) as tf.Scalar);
      return [value, ...Object.keys(grads).sort().map((k) => grads[k])];
    });
    t.diagnostic(`batch ${batch}: max scaled error ${worst.toExponential(2)}`);
    model.dispose();
    labels.dispose();
  }
});
