import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import { resolveConfig } from '../src/config/load';
import { buildNetwork, chain, newHead } from '../src/models/archs';
import { Network } from '../src/models/network';
import { networkToOnnx, OnnxLayout } from '../src/models/onnx';
import { loadRunWeights, readSourceRun } from '../src/runs/run';
import { cli, QUICKSTART, tmpDir, TINY } from './helpers';

// ONNX export checked against onnxruntime (onnxruntime-node, CPU, from the npm
// registry): the exported model's logits on the same images equal granular's.

before(async () => {
  await tf.setBackend('cpu');
});

/** Moves every weight away from its initial value (batch norm statistics, LayerNorm, the class token) so that each one matters. */
function perturb(net: Network, seed: number): void {
  net.variables().forEach((v, i) => {
    const s = seed * 1000 + i;
    const shape = v.variable.shape;
    tf.tidy(() => {
      if (v.name.endsWith('moving_variance')) v.variable.assign(tf.randomUniform(shape, 0.5, 2, 'float32', s));
      else if (v.name.endsWith('gamma')) v.variable.assign(tf.add(1, tf.randomNormal(shape, 0, 0.2, 'float32', s)));
      else if (/moving_mean|beta|bias|cls_token/.test(v.name)) v.variable.assign(tf.randomNormal(shape, 0, 0.2, 'float32', s));
    });
  });
}

/** The logits of an ONNX model (bytes or file) on NHWC images, fed in `layout`. */
async function onnxLogits(model: Uint8Array | string, images: tf.Tensor4D, layout: OnnxLayout): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(model as Uint8Array);
  const x = layout === 'nchw' ? images.transpose([0, 3, 1, 2]) : images.clone();
  try {
    const out = await session.run({ image: new ort.Tensor('float32', x.dataSync() as Float32Array, x.shape) });
    assert.deepEqual(Object.keys(out), ['logits']);
    return out.logits.data as Float32Array;
  } finally {
    x.dispose();
    await session.release();
  }
}

const maxDiff = (a: Float32Array, b: Float32Array) => {
  assert.equal(a.length, b.length);
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
};

/** [arch, image size, channels, model settings]: tiny widths, every layer kind granular builds. */
const CASES: Array<[string, number, number, Record<string, unknown>]> = [
  ['two-layer-conv', 8, 3, { arch: 'two-layer-conv', patch_size: 4, activation: 'smooth_relu', init_scale: 5 }],
  ['cnn-small', 12, 1, { arch: 'cnn-small', width: 0.125 }],
  ['resnet8', 9, 3, { arch: 'resnet8', width: 0.25 }],
  ['resnet18 (TensorFlow same padding: uneven at 32 px)', 32, 3, { arch: 'resnet18', width: 0.0625 }],
  ['resnet50 (torch padding)', 32, 3, { arch: 'resnet50', width: 0.0625, padding: 'torch' }],
  ['densenet121', 32, 3, { arch: 'densenet121', width: 0.125 }],
  ['vit-tiny (class token)', 16, 3, { arch: 'vit-tiny', width: 0.125, patch_size: 4 }],
  ['vit-small (average pooling)', 8, 3, { arch: 'vit-small', width: 0.0625, patch_size: 4, pool: 'avg' }],
];

for (const [label, size, channels, model] of CASES) {
  test(`ONNX export of ${label}: onnxruntime's logits equal granular's (NCHW input)`, async (t) => {
    const cfg = resolveConfig([{ name: 'onnx-test', seed: 3, model, data: { image_size: size, channels } }]);
    const net = buildNetwork(cfg, [size, size, channels], 5);
    const images = tf.randomNormal([2, size, size, channels], 0, 1, 'float32', 7) as tf.Tensor4D;
    try {
      perturb(net, 11);
      const ours = net.forward(images, net.blocks.map(() => false));
      const want = ours.dataSync() as Float32Array;
      ours.dispose();
      const got = await onnxLogits(await networkToOnnx(net), images, 'nchw');
      const d = maxDiff(got, want);
      t.diagnostic(`${label}: max abs difference ${d.toExponential(2)}`);
      assert.ok(d <= 1e-4, `${label}: onnxruntime's logits differ from granular's by ${d}`);
      assert.ok(Math.max(...want.map(Math.abs)) > 1e-3, 'the logits are not all ~0 (the comparison means something)');
    } finally {
      images.dispose();
      net.dispose();
    }
  });
}

test('ONNX export with --layout nhwc: the input is granular\'s NHWC, same logits', async () => {
  const cfg = resolveConfig([{ name: 'onnx-test', seed: 4, model: { arch: 'resnet8', width: 0.25 }, data: { image_size: 8, channels: 3 } }]);
  const net = buildNetwork(cfg, [8, 8, 3], 4);
  const images = tf.randomNormal([3, 8, 8, 3], 0, 1, 'float32', 8) as tf.Tensor4D;
  try {
    perturb(net, 12);
    const ours = net.forward(images, net.blocks.map(() => false));
    const d = maxDiff(await onnxLogits(await networkToOnnx(net, { layout: 'nhwc' }), images, 'nhwc'), ours.dataSync() as Float32Array);
    ours.dispose();
    assert.ok(d <= 1e-4, `NHWC export differs by ${d}`);
  } finally {
    images.dispose();
    net.dispose();
  }
});

test('a layer with no ONNX translation is refused by name, not skipped', async () => {
  const net = new Network('odd', [4, 4, 1], [chain('flat', [tf.layers.flatten({ name: 'flat_layer' })])], newHead(2, 1), 2);
  try {
    await assert.rejects(networkToOnnx(net), /layer 'flat_layer' \(Flatten\) has no ONNX translation; granular exports Conv2D/);
  } finally {
    net.dispose();
  }
});

test('granular export --format onnx: a trained run gives onnxruntime the logits granular gives; usage errors exit 2', async () => {
  const dir = tmpDir();
  const run = path.join(dir, 'pre');
  const model = ['--set', 'model.arch=resnet8', '--set', 'model.width=0.25', '--set', 'data.image_size=16', '--set', 'data.synthetic.patch_size=8', '--set', 'data.normalize=imagenet'];
  const r = cli(['pretrain', '--config', QUICKSTART, ...model, ...TINY, '--set', 'train.epochs=1', '--quiet', '--run-dir', run]);
  assert.equal(r.code, 0, r.stderr);
  const out = path.join(dir, 'out', 'model.onnx');
  const e = cli(['export', run, '--format', 'onnx', '--out', out]);
  assert.equal(e.code, 0, e.stderr);
  assert.match(e.stdout, /exported .*model\.onnx: resnet8, ONNX opset 17, input 'image' \[N, 1, 16, 16\] \(NCHW\), output 'logits' \[N, \d+\]/);
  const session = await ort.InferenceSession.create(out);
  assert.deepEqual([session.inputNames, session.outputNames], [['image'], ['logits']]);
  await session.release();

  const src = readSourceRun(run);
  const images = tf.randomUniform([2, 16, 16, 1], -2, 2, 'float32', 9) as tf.Tensor4D;
  const net = buildNetwork(src.cfg, [16, 16, 1], Number(src.summary.num_classes));
  try {
    loadRunWeights(net, run);
    const ours = net.forward(images, net.blocks.map(() => false));
    const d = maxDiff(await onnxLogits(out, images, 'nchw'), ours.dataSync() as Float32Array);
    ours.dispose();
    assert.ok(d <= 1e-4, `exported run: onnxruntime's logits differ from granular's by ${d}`);
  } finally {
    net.dispose();
    images.dispose();
  }
  const text = fs.readFileSync(out).toString('latin1');
  assert.match(text, /data\.normalize=imagenet \(minus ImageNet mean \[0\.485, 0\.456, 0\.406\]/, 'the doc_string says how inputs are normalised');

  const bad = cli(['export', run, '--format', 'onnx', '--names', 'timm', '--out', path.join(dir, 'x.onnx')]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--names applies to --format safetensors/);
  const badLayout = cli(['export', run, '--format', 'onnx', '--layout', 'nwhc', '--out', path.join(dir, 'x.onnx')]);
  assert.equal(badLayout.code, 2);
  assert.match(badLayout.stderr, /--layout 'nwhc' must be nchw or nhwc/);
  assert.ok(!fs.existsSync(path.join(dir, 'x.onnx')));
});
