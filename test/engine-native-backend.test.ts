import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { loadOneDnn } from '../src/engine/native-kernels';
import { BufferPool, memoryLimit, NativeBackend, registerNativeBackend } from '../src/engine/native-backend';
import { installLowMemoryGradients } from '../src/engine/gradients';
import { asOutOfMemory, OutOfMemoryError, outOfMemoryAdvice } from '../src/engine/oom';
import { resolveConfig } from '../src/config/load';
import { buildNetwork } from '../src/models/archs';
import { Rng } from '../src/util/rng';
import { cli, metricRows, modelWeights, QUICKSTART, readJson, same, scaledError, tmpDir } from './helpers';

const { addon, why } = loadOneDnn();
/** Tests of the native backend need the addon; without it they skip and say why. */
const skip = addon ? false : `native oneDNN kernels unavailable: ${why}`;

/** tfjs's own engine.gradients, before installLowMemoryGradients replaces it. */
const tfjsGradients = tf.engine().gradients;

before(async () => {
  if (!addon) return;
  assert.ok((await registerNativeBackend(2)).native);
  assert.ok(await tf.setBackend('native'));
  installLowMemoryGradients();
});

const backend = () => tf.backend() as unknown as NativeBackend;

test('a tensor made from an array copies it, and dataSync returns a copy', { skip }, () => {
  const a = new Float32Array([1, 2, 3, 4]);
  const t = tf.tensor(a, [2, 2]);
  a[0] = 100;
  assert.deepEqual([...t.dataSync()], [1, 2, 3, 4], 'the caller may reuse its array');
  const read = t.dataSync();
  read[1] = 100;
  assert.deepEqual([...t.dataSync()], [1, 2, 3, 4], 'a read result may be written to');
  const kept = tf.tidy(() => tf.add(t, 1)).dataSync();
  t.dispose();
  assert.deepEqual([...kept], [2, 3, 4, 5], 'a read result outlives its tensor');
});

/** One SGD-free training step (forward, loss, gradients) of `net` on a fixed batch. */
function gradientStep(net: ReturnType<typeof buildNetwork>, x: tf.Tensor, y: tf.Tensor): Float32Array[] {
  const vars = net.variables().filter((v) => v.trainable).map((v) => v.variable);
  const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(y, net.forward(x, net.blocks.map(() => true))) as tf.Scalar, vars);
  const out = [value, ...vars.map((v) => grads[v.name])].map((t) => t.dataSync() as Float32Array);
  tf.dispose([value, ...Object.values(grads)]);
  return out;
}

function smallResnet(arch = 'resnet8', size = 16): { net: ReturnType<typeof buildNetwork>; x: tf.Tensor; y: tf.Tensor } {
  const cfg = resolveConfig([{ seed: 3, model: { arch, width: 0.5 }, data: { image_size: size, channels: 3 } }]);
  const net = buildNetwork(cfg, [size, size, 3], 5);
  const rng = new Rng(5);
  const x = tf.tensor4d(Float32Array.from({ length: 8 * size * size * 3 }, () => rng.normal()), [8, size, size, 3]);
  const y = tf.oneHot(tf.tensor1d(Int32Array.from({ length: 8 }, () => rng.int(5)), 'int32'), 5);
  return { net, x, y };
}

test('a repeated training step allocates nothing new, and live memory returns to where it was', { skip }, () => {
  const { net, x, y } = smallResnet();
  const b = backend();
  gradientStep(net, x, y);
  const live = b.pool.liveBytes;
  const take = b.pool.take.bind(b.pool);
  let fresh = 0;
  b.pool.take = (ctor, length) => {
    const a = take(ctor, length);
    if (!a) fresh++;
    return a;
  };
  try {
    gradientStep(net, x, y);
  } finally {
    b.pool.take = take;
  }
  assert.equal(fresh, 0, 'every output of the second step came from the pool');
  assert.equal(b.pool.liveBytes, live);
  net.dispose();
  tf.dispose([x, y]);
});

test('the pool keeps at most the live high-water mark (+ slack), freeing the oldest buffers', { skip }, () => {
  const released: Float32Array[] = [];
  const pool = new BufferPool((a) => {
    released.push(a as Float32Array);
    addon!.release(a);
  }, 1000);
  const live = (n: number) => {
    const a = (pool.take(Float32Array, n) as Float32Array | null) ?? new Float32Array(n);
    pool.grew(a.byteLength);
    return a;
  };
  const free = (a: Float32Array) => {
    pool.liveBytes -= a.byteLength;
    pool.put(a);
  };
  // A step that needs 2000 bytes at its peak, then gives everything back.
  const a = live(250);
  const b = live(250);
  free(a);
  free(b);
  assert.equal(pool.peakLiveBytes, 2000);
  assert.equal(pool.freeBytes, 2000);
  // The same step again: served from the pool, nothing new.
  const a2 = live(250);
  assert.ok(a2 === a || a2 === b);
  free(a2);
  // Other sizes, one live at a time: the pool stays within peak + slack (3000 bytes), oldest out first.
  const others = [100, 101, 102, 103].map((n) => {
    const x = live(n);
    free(x);
    return x;
  });
  assert.ok(pool.liveBytes + pool.freeBytes <= 3000, `pooled ${pool.freeBytes}`);
  assert.ok(released.length >= 1 && (released[0] === a || released[0] === b), 'the oldest buffer went first');
  assert.equal(released[0].length, 0, 'a released buffer is detached: its memory is freed at once');
  assert.ok(others.every((x) => !released.includes(x)), 'recent buffers stay');
});

test('the pool lends a longer buffer only when asked (fit), the shortest that fits, never past fit x', () => {
  const pool = new BufferPool(() => {}, 1 << 20);
  const give = (n: number) => {
    const a = new Float32Array(n);
    pool.grew(a.byteLength);
    pool.liveBytes -= a.byteLength;
    pool.put(a);
    return a;
  };
  const long = give(300);
  const longer = give(180);
  give(90);
  assert.equal(pool.take(Float32Array, 100), null, 'exact only by default');
  assert.equal(pool.take(Float32Array, 100, 2), longer, 'the shortest of those within 2x (180, not 300)');
  assert.equal(pool.take(Float32Array, 100, 2), null, '300 is past 2 x 100');
  assert.equal(pool.take(Float32Array, 150, 2), long);
  assert.equal(pool.take(Int32Array, 80, 2), null, 'never another element type');
  assert.equal(pool.freeBytes, 90 * 4);
});

test('a smaller output reuses a pooled longer buffer (no fresh pages), which goes back to the pool whole', { skip }, () => {
  const b = backend();
  const full = 64 * 32 * 32 * 16; // 4 MiB of float32: above the loose-fit threshold
  const x = tf.tidy(() => tf.fill([64, 32, 32, 16], 1));
  const y = tf.tidy(() => tf.relu(x));
  const lent = b.values(y).buffer;
  y.dispose();
  const pooled = b.pool.freeBytes;
  // A last partial batch of 40: its relu output is a view of the batch-64 buffer.
  const part = tf.tidy(() => tf.relu(tf.slice(x, [0, 0, 0, 0], [40, 32, 32, 16])));
  const v = b.values(part);
  assert.equal(v.length, 40 * 32 * 32 * 16);
  assert.equal(v.buffer, lent, 'the output is a view of the pooled batch-64 buffer, not fresh pages');
  assert.deepEqual([...new Set(part.dataSync())], [1]);
  part.dispose();
  const again = b.pool.take(Float32Array, full);
  assert.ok(again && again.buffer === lent && again.length === full, 'back in the pool as the whole buffer');
  b.pool.put(again);
  assert.ok(b.pool.freeBytes >= pooled);
  x.dispose();
});

/** Linux with transparent huge pages built in (any mode): madvise(MADV_HUGEPAGE) is accepted. */
const thp = process.platform === 'linux' && fs.existsSync('/sys/kernel/mm/transparent_hugepage/enabled');

test('adviseHugePages advises a buffer\'s whole aligned 2 MiB pages, and nothing of one too small', { skip: skip || (thp ? false : 'no transparent huge pages on this system') }, () => {
  const a = new Float32Array(2 * 2 ** 20); // 8 MiB
  const advised = addon!.adviseHugePages(a);
  assert.equal(advised % 2 ** 21, 0, 'whole 2 MiB pages only');
  assert.ok(advised >= 6 * 2 ** 20 && advised <= 8 * 2 ** 20, `advised ${advised} bytes of an 8 MiB buffer`);
  assert.equal(addon!.adviseHugePages(new Float32Array(1000)), 0, 'a buffer spanning no aligned 2 MiB page');
  // A view advises its whole buffer.
  assert.equal(addon!.adviseHugePages(a.subarray(10, 20)), advised);
  assert.throws(() => addon!.adviseHugePages({} as never), /adviseHugePages needs a typed array/);
});

test('backprop that frees as it goes: the same gradients as tfjs, at a lower peak', { skip }, () => {
  const { net, x, y } = smallResnet('resnet20', 32);
  const b = backend();
  const engine = tf.engine() as unknown as { gradients: unknown };
  const mine = engine.gradients;
  const run = (gradients: unknown) => {
    engine.gradients = gradients;
    try {
      b.pool.peakLiveBytes = b.pool.liveBytes;
      const before = b.pool.liveBytes;
      const grads = gradientStep(net, x, y);
      return { grads, peak: b.pool.peakLiveBytes - before };
    } finally {
      engine.gradients = mine;
    }
  };
  const ours = run(mine);
  const theirs = run(tfjsGradients);
  // Batch-norm moving statistics moved in between, but gradients do not depend on them.
  theirs.grads.forEach((g, i) => assert.ok(same(ours.grads[i], g), `gradient ${i} differs`));
  assert.ok(ours.peak < 0.75 * theirs.peak, `peak ${ours.peak} bytes vs tfjs's ${theirs.peak}`);
  net.dispose();
  tf.dispose([x, y]);
});

test('out-of-memory errors: classified, with what failed and what to lower', () => {
  const trap = asOutOfMemory(Object.assign(new Error('memory access out of bounds'), { name: 'RuntimeError' }), { kernel: 'Conv2D', inputs: [{ shape: [32, 128, 128, 16] } as tf.TensorInfo] });
  assert.ok(trap instanceof OutOfMemoryError);
  assert.match(trap.message, /in Conv2D \(inputs \[32,128,128,16\]\).*4 GiB/);
  const v8 = asOutOfMemory(new RangeError('Array buffer allocation failed'));
  assert.ok(v8 instanceof OutOfMemoryError);
  assert.equal(asOutOfMemory(new Error('ENOENT: no such file')), null);
  const advice = outOfMemoryAdvice(new OutOfMemoryError({ cause: 'test', bytes: 3 * 2 ** 20, shape: [8, 64, 64, 48], dtype: 'float32' }), { batchSize: 8, imageSize: 64 });
  assert.match(advice, /float32 tensor \[8,64,64,48\] \(3\.0 MiB\).*train\.batch_size \(now 8; e\.g\. --set train\.batch_size=4\).*data\.image_size \(now 64\)/);
  assert.equal(memoryLimit('8G'), 8 * 2 ** 30);
  assert.equal(memoryLimit('512m'), 512 * 2 ** 20);
  assert.equal(memoryLimit('1000'), 1000);
  assert.equal(memoryLimit(undefined), null);
  assert.throws(() => memoryLimit('lots'), /GRANULAR_MEMORY_LIMIT='lots' is not a size/);
});

test('a tensor over the wasm heap is an OutOfMemoryError naming it, not a trap', () => {
  const engine = path.join(__dirname, '..', 'src', 'engine', 'backend.js');
  const script = `const tf = require('@tensorflow/tfjs');
require(${JSON.stringify(engine)}).initEngine('wasm', 1).then(() => {
  try { tf.fill([1100000000], 1); console.log('no error'); } catch (e) { console.log(e.name + ': ' + e.message); }
});`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, GRANULAR_NATIVE: '0' }, cwd: path.join(__dirname, '..', '..') });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^OutOfMemoryError: out of memory: a tensor \(4\.10 GiB\) in Fill did not fit \(the wasm backend's heap is at most 4 GiB/);
});

test('out of memory during training: exit 1, summary.json names the tensor and what to lower', { skip }, () => {
  const dir = path.join(tmpDir(), 'run');
  const r = cli(
    ['pretrain', '--config', QUICKSTART, '--quiet', '--set', 'model.arch=cnn-small', '--set', 'train.epochs=1', '--set', 'data.synthetic.train_samples=128', '--set', 'data.synthetic.test_samples=32', '--run-dir', dir],
    { env: { GRANULAR_MEMORY_LIMIT: '4M' } },
  );
  assert.equal(r.code, 1, r.stderr);
  const s = readJson<{ status: string; error: string; error_type: string }>(path.join(dir, 'summary.json'));
  assert.equal(s.status, 'failed');
  assert.equal(s.error_type, 'OutOfMemoryError');
  assert.match(s.error, /^out of memory: a float32 tensor \[\d+(,\d+)*\] \([\d.]+ MiB\) in \w+ .*GRANULAR_MEMORY_LIMIT=4M.*Lower train\.batch_size \(now 64/);
});

test('the native backend trains to the same losses as the reference cpu backend', { skip }, () => {
  const root = tmpDir();
  const args = ['--config', QUICKSTART, '--quiet', '--set', 'model.arch=cnn-small', '--set', 'model.width=0.25', '--set', 'data.image_size=16', '--set', 'data.synthetic.patch_size=4',
    '--set', 'data.channels=3', '--set', 'data.synthetic.train_samples=64', '--set', 'data.synthetic.test_samples=16', '--set', 'train.epochs=2', '--set', 'train.batch_size=16',
    '--set', 'data.val_fraction=0', '--set', 'eval.dynamics_every=0'];
  const losses: number[][] = [];
  for (const b of ['native', 'cpu']) {
    const dir = path.join(root, b);
    const r = cli(['pretrain', ...args, '--backend', b, '--run-dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readJson(path.join(dir, 'env.json')).backend, b);
    losses.push(metricRows(dir).filter((x) => x.kind === 'epoch' && Number(x.epoch) >= 1).map((x) => Number(x.train_loss)));
  }
  assert.equal(losses[0].length, 2);
  losses[0].forEach((l, i) => assert.ok(Math.abs(l - losses[1][i]) < 1e-4, `epoch ${i + 1}: native ${l} vs cpu ${losses[1][i]}`));
});

test('a resnet training step (fused batch norm + residual + ReLU) has the cpu backend\'s gradients', { skip }, async () => {
  const { net, x, y } = smallResnet('resnet8', 16);
  const ours = gradientStep(net, x, y);
  await tf.setBackend('cpu');
  try {
    const reference = gradientStep(net, x, y);
    reference.forEach((g, i) => {
      const error = scaledError(ours[i], g);
      assert.ok(error <= 1e-4, `gradient ${i} (${g.length} values): scaled error ${error}`);
    });
  } finally {
    await tf.setBackend('native');
    net.dispose();
    tf.dispose([x, y]);
  }
});

test('resnet18 and resnet50 have torchvision\'s parameter counts and blocks stem, layer1..layer4', async () => {
  // Counted on the cpu backend, whatever ran before: without the addon no
  // backend has been set yet (getBackend() is undefined), and only a backend
  // that was set is restored.
  const previous: string | undefined = tf.getBackend();
  await tf.setBackend('cpu');
  try {
    // torchvision's resnet18 and resnet50 (1000 classes): 11,689,512 and 25,557,032 parameters.
    for (const [arch, params] of [['resnet18', 11_689_512], ['resnet50', 25_557_032]] as const) {
      const cfg = resolveConfig([{ seed: 0, model: { arch }, data: { image_size: 224, channels: 3 } }]);
      const net = buildNetwork(cfg, [224, 224, 3], 1000);
      assert.equal(net.paramCount(net.blocks.map(() => true)), params, arch);
      assert.deepEqual(net.blocks.map((b) => b.name), ['stem', 'layer1', 'layer2', 'layer3', 'layer4']);
      // The ImageNet stem takes 224 px to 56 (7x7/2 conv, 3x3/2 pool), layer4 to 7, then the pool.
      assert.deepEqual(net.layersModel().getLayer('stem_pool').outputShape, [null, 56, 56, 64]);
      net.dispose();
    }
    const cifar = buildNetwork(resolveConfig([{ seed: 0, model: { arch: 'resnet18', stem: 'cifar' }, data: { image_size: 32, channels: 3 } }]), [32, 32, 3], 10);
    assert.deepEqual(cifar.layersModel().getLayer('stem_relu').outputShape, [null, 32, 32, 64]);
    cifar.dispose();
    assert.throws(() => resolveConfig([{ model: { arch: 'resnet8', stem: 'cifar' } }]), /model\.stem applies to resnet18 and resnet50 only/);
  } finally {
    if (previous) await tf.setBackend(previous);
  }
});

test('resnet18 at 224 px trains (tiny width, batch 4, 2 steps), and a fine-tune with 2 frozen blocks keeps them bit-identical', { skip }, () => {
  const root = tmpDir();
  const pre = path.join(root, 'pre');
  const small = ['--set', 'model.arch=resnet18', '--set', 'model.width=0.125', '--set', 'data.image_size=224', '--set', 'data.channels=3', '--set', 'data.synthetic.patch_size=8',
    '--set', 'data.synthetic.branching=[2,2]', '--set', 'data.synthetic.train_samples=8', '--set', 'data.synthetic.test_samples=4', '--set', 'data.val_fraction=0',
    '--set', 'train.epochs=1', '--set', 'train.batch_size=4', '--set', 'eval.dynamics_every=0'];
  let r = cli(['pretrain', '--config', QUICKSTART, '--quiet', ...small, '--run-dir', pre]);
  assert.equal(r.code, 0, r.stderr);
  const s = readJson<{ status: string; step: number; train_loss: number }>(path.join(pre, 'summary.json'));
  assert.equal(s.status, 'completed');
  assert.equal(s.step, 2);
  assert.ok(Number.isFinite(s.train_loss));
  const env = readJson<{ backend: string; blocks: Array<{ name: string }> }>(path.join(pre, 'env.json'));
  assert.deepEqual(env.blocks.map((b) => b.name), ['stem', 'layer1', 'layer2', 'layer3', 'layer4']);
  const ft = path.join(root, 'ft');
  r = cli(['finetune', '--from', pre, '--level', 'top', '--freeze', '2', '--quiet', '--run-dir', ft]);
  assert.equal(r.code, 0, r.stderr);
  const a = modelWeights(pre);
  const b = modelWeights(ft);
  const frozen = [...a.keys()].filter((n) => /^(stem|layer1)_/.test(n));
  assert.ok(frozen.some((n) => n.endsWith('moving_variance')));
  for (const n of frozen) assert.ok(same(a.get(n)!, b.get(n)!), `frozen ${n} changed`);
  const trained = [...a.keys()].filter((n) => /^layer[234]_.*(conv1\/kernel|bn1\/moving_mean)/.test(n));
  for (const n of trained) assert.ok(!same(a.get(n)!, b.get(n)!), `trained ${n} did not change`);
});
