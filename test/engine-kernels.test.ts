import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { registerWasmTrainingKernels } from '../src/engine/wasm-kernels';
import { Rng } from '../src/util/rng';
import { ConvCase, convGridCases, describeConvCase, scaledError } from './helpers';


/** Float32 sums of up to a few hundred products: 1e-4 of the larger of 1 and the reference's magnitude. */
const TOLERANCE = 1e-4;

// Registered before the backend initialises, the way src/engine/backend.ts does it.
registerWasmTrainingKernels();

before(async () => {
  assert.ok(await tf.setBackend('wasm'), 'wasm backend failed to initialise');
});

function randomValues(rng: Rng, size: number): Float32Array {
  return Float32Array.from({ length: size }, () => rng.normal());
}

/** dx and dFilter of conv2d for the given upstream gradient, computed on `backendName`. */
async function convGradients(
  backendName: string,
  c: ConvCase,
  values: { x: Float32Array; filter: Float32Array; dy: Float32Array },
  outShape: number[],
): Promise<{ dx: Float32Array; dFilter: Float32Array }> {
  await tf.setBackend(backendName);
  return tf.tidy(() => {
    const x = tf.tensor4d(values.x, [c.batch, c.height, c.width, c.inChannels]);
    const filter = tf.tensor4d(values.filter, [c.kernel, c.kernel, c.inChannels, c.outChannels]);
    const dy = tf.tensor(values.dy, outShape);
    const conv = (input: tf.Tensor, weights: tf.Tensor) =>
      tf.conv2d(input as tf.Tensor4D, weights as tf.Tensor4D, c.strides, c.pad);
    const [dx, dFilter] = tf.grads(conv)([x, filter], dy);
    return { dx: dx.dataSync() as Float32Array, dFilter: dFilter.dataSync() as Float32Array };
  });
}

async function checkConvCase(c: ConvCase, rng: Rng): Promise<{ dx: number; dFilter: number }> {
  const { outShape } = tf.backend_util.computeConv2DInfo(
    [c.batch, c.height, c.width, c.inChannels],
    [c.kernel, c.kernel, c.inChannels, c.outChannels],
    c.strides,
    1,
    c.pad,
  );
  const values = {
    x: randomValues(rng, c.batch * c.height * c.width * c.inChannels),
    filter: randomValues(rng, c.kernel * c.kernel * c.inChannels * c.outChannels),
    dy: randomValues(rng, outShape.reduce((a, b) => a * b, 1)),
  };
  const wasm = await convGradients('wasm', c, values, outShape);
  const cpu = await convGradients('cpu', c, values, outShape);
  await tf.setBackend('wasm');
  const errors = { dx: scaledError(wasm.dx, cpu.dx), dFilter: scaledError(wasm.dFilter, cpu.dFilter) };
  assert.ok(errors.dx <= TOLERANCE, `${describeConvCase(c)}: dx error ${errors.dx}`);
  assert.ok(errors.dFilter <= TOLERANCE, `${describeConvCase(c)}: dFilter error ${errors.dFilter}`);
  return errors;
}

test('the gradient kernels are registered for wasm', () => {
  assert.equal(tf.getBackend(), 'wasm');
  assert.ok(tf.getKernel('Conv2DBackpropFilter', 'wasm'));
  assert.ok(tf.getKernel('Conv2DBackpropInput', 'wasm'));
});

test('conv2d gradients match the cpu backend: strides 1/2, same/valid, kernels 1/3/5', async (t) => {
  const rng = new Rng(20240611);
  const cases = convGridCases(rng, { sizeSpread: 4, maxIn: 4, maxOut: 5 });
  const worst = { dx: 0, dFilter: 0 };
  for (const c of cases) {
    const errors = await checkConvCase(c, rng);
    worst.dx = Math.max(worst.dx, errors.dx);
    worst.dFilter = Math.max(worst.dFilter, errors.dFilter);
  }
  t.diagnostic(`${cases.length} cases, max scaled error dx ${worst.dx.toExponential(2)}, dFilter ${worst.dFilter.toExponential(2)}`);
});

test('conv2d gradients match the cpu backend: unequal strides and explicit paddings', async (t) => {
  const rng = new Rng(7);
  const cases: ConvCase[] = [
    { batch: 2, height: 7, width: 6, inChannels: 3, outChannels: 4, kernel: 3, strides: [2, 1], pad: 'same' },
    { batch: 1, height: 8, width: 9, inChannels: 2, outChannels: 3, kernel: 3, strides: [1, 2], pad: 'valid' },
    { batch: 2, height: 6, width: 7, inChannels: 2, outChannels: 3, kernel: 3, strides: [1, 1], pad: [[0, 0], [1, 2], [0, 1], [0, 0]] },
    { batch: 2, height: 7, width: 6, inChannels: 3, outChannels: 2, kernel: 3, strides: [2, 2], pad: [[0, 0], [2, 0], [1, 1], [0, 0]] },
    // Padding wider than the kernel: Conv2DBackpropInput falls back to the original wasm kernel.
    { batch: 2, height: 5, width: 4, inChannels: 2, outChannels: 3, kernel: 1, strides: [1, 1], pad: [[0, 0], [2, 1], [1, 0], [0, 0]] },
  ];
  const worst = { dx: 0, dFilter: 0 };
  for (const c of cases) {
    const errors = await checkConvCase(c, rng);
    worst.dx = Math.max(worst.dx, errors.dx);
    worst.dFilter = Math.max(worst.dFilter, errors.dFilter);
  }
  t.diagnostic(`${cases.length} cases, max scaled error dx ${worst.dx.toExponential(2)}, dFilter ${worst.dFilter.toExponential(2)}`);
});

test('convs whose output gradients share one buffer under different shapes get their own dW', async () => {
  // The Add hands both reshaped conv outputs the same gradient buffer, seen as
  // [2,4,4,8] by one conv and [2,4,8,4] by the other: a matmul operator cached
  // per buffer would hand the second conv the first one's packed dy.
  const rng = new Rng(5);
  const x1 = randomValues(rng, 2 * 4 * 4 * 3);
  const x2 = randomValues(rng, 2 * 4 * 8 * 3);
  const w1 = randomValues(rng, 3 * 3 * 3 * 8);
  const w2 = randomValues(rng, 3 * 3 * 3 * 4);
  const weighting = randomValues(rng, 256);
  const filterGradients = async (backendName: string) => {
    await tf.setBackend(backendName);
    return tf.tidy(() => {
      const loss = (a: tf.Tensor, b: tf.Tensor) => {
        const y1 = tf.conv2d(tf.tensor4d(x1, [2, 4, 4, 3]), a as tf.Tensor4D, 1, 'same');
        const y2 = tf.conv2d(tf.tensor4d(x2, [2, 4, 8, 3]), b as tf.Tensor4D, 1, 'same');
        return tf.sum(tf.mul(tf.add(y1.reshape([256]), y2.reshape([256])), tf.tensor1d(weighting)));
      };
      const [dW1, dW2] = tf.grads(loss)([tf.tensor4d(w1, [3, 3, 3, 8]), tf.tensor4d(w2, [3, 3, 3, 4])]);
      return [dW1.dataSync() as Float32Array, dW2.dataSync() as Float32Array];
    });
  };
  const wasm = await filterGradients('wasm');
  const cpu = await filterGradients('cpu');
  await tf.setBackend('wasm');
  assert.ok(scaledError(wasm[0], cpu[0]) <= TOLERANCE, `dW1 error ${scaledError(wasm[0], cpu[0])}`);
  assert.ok(scaledError(wasm[1], cpu[1]) <= TOLERANCE, `dW2 error ${scaledError(wasm[1], cpu[1])}`);
});

test('registering again after the backend initialised keeps the kernels and changes nothing', async () => {
  const filterKernel = tf.getKernel('Conv2DBackpropFilter', 'wasm');
  const inputKernel = tf.getKernel('Conv2DBackpropInput', 'wasm');
  registerWasmTrainingKernels();
  registerWasmTrainingKernels();
  assert.equal(tf.getKernel('Conv2DBackpropFilter', 'wasm'), filterKernel);
  assert.equal(tf.getKernel('Conv2DBackpropInput', 'wasm'), inputKernel);
  // Both the new path and the fallback to the original kernel still work.
  const rng = new Rng(3);
  await checkConvCase({ batch: 2, height: 5, width: 6, inChannels: 2, outChannels: 3, kernel: 3, strides: [2, 2], pad: 'same' }, rng);
  await checkConvCase({ batch: 1, height: 4, width: 4, inChannels: 2, outChannels: 2, kernel: 1, strides: [1, 1], pad: [[0, 0], [2, 0], [0, 1], [0, 0]] }, rng);
});

test('NCHW and dilated convolutions are rejected with a clear error', () => {
  const x = tf.zeros([1, 4, 4, 2]);
  const dy = tf.zeros([1, 4, 4, 3]);
  const filter = tf.zeros([3, 3, 2, 3]);
  const common = { strides: 1, pad: 'same' } as const;
  assert.throws(
    () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...common, dataFormat: 'NCHW', filterShape: [3, 3, 2, 3] }),
    /only dataFormat 'NHWC'/,
  );
  assert.throws(
    () =>
      tf.engine().runKernel(
        'Conv2DBackpropInput',
        { dy, filter },
        { ...common, dataFormat: 'NHWC', inputShape: [1, 4, 4, 2], dilations: 2 },
      ),
    /only undilated convolutions/,
  );
  tf.dispose([x, dy, filter]);
});

test('a 2-conv-layer model has the same loss gradient on wasm and cpu', async (t) => {
  const rng = new Rng(11);
  const [batch, height, width, channels, classes] = [3, 9, 8, 3, 4];
  const inputs = randomValues(rng, batch * height * width * channels);
  // One-hot rows cycling through the classes.
  const labels = Float32Array.from({ length: batch * classes }, (_, i) => (i % classes === Math.floor(i / classes) % classes ? 1 : 0));
  const init = (seed: number) => ({ kernelInitializer: tf.initializers.glorotUniform({ seed }), biasInitializer: tf.initializers.randomNormal({ seed }) });
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({ inputShape: [height, width, channels], filters: 4, kernelSize: 3, padding: 'same', activation: 'relu', ...init(1) }),
      tf.layers.conv2d({ filters: 5, kernelSize: 3, strides: 2, padding: 'valid', activation: 'relu', ...init(2) }),
      tf.layers.flatten(),
      tf.layers.dense({ units: classes, ...init(3) }),
    ],
  });
  // The same model on both backends: tfjs moves the weights to whichever backend reads them.
  const lossAndGradients = async (backendName: string) => {
    await tf.setBackend(backendName);
    return tf.tidy(() => {
      const x = tf.tensor4d(inputs, [batch, height, width, channels]);
      const y = tf.tensor2d(labels, [batch, classes]);
      const { value, grads } = tf.variableGrads(
        () => tf.losses.softmaxCrossEntropy(y, model.apply(x) as tf.Tensor) as tf.Scalar,
      );
      const gradValues = Object.entries(grads).map(([name, g]) => [name, g.dataSync() as Float32Array]);
      return { loss: value.dataSync()[0], grads: Object.fromEntries(gradValues) as Record<string, Float32Array> };
    });
  };
  const wasm = await lossAndGradients('wasm');
  const cpu = await lossAndGradients('cpu');
  await tf.setBackend('wasm');
  model.dispose();

  assert.ok(Math.abs(wasm.loss - cpu.loss) <= TOLERANCE * Math.max(1, Math.abs(cpu.loss)), `loss ${wasm.loss} vs ${cpu.loss}`);
  assert.equal(Object.keys(wasm.grads).length, 6, 'kernel and bias gradients of 3 layers');
  let worst = 0;
  for (const [name, expected] of Object.entries(cpu.grads)) {
    const actual = wasm.grads[name];
    assert.ok(actual, `wasm has no gradient for ${name}`);
    const error = scaledError(actual, expected);
    assert.ok(error <= TOLERANCE, `${name}: error ${error}`);
    worst = Math.max(worst, error);
  }
  t.diagnostic(`loss ${wasm.loss.toFixed(6)} (cpu ${cpu.loss.toFixed(6)}), max scaled gradient error ${worst.toExponential(2)}`);
});
