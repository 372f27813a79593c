import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { AugmentKind } from '../src/data/augment';
import { fillBatch, InlineBatches, PrefetchedBatches } from '../src/data/cache/prefetch';
import { IMAGENET_MEAN, IMAGENET_STD, Normalization, PixelStore, readAll } from '../src/data/cache/store';
import { DeviceBatches, decodeOnDevice } from '../src/train/device-batch';
import { cli, metricRows, readJson, tmpDir } from './helpers';
import { writeFolderDataset } from './data-fixtures';

const quiet = () => {};
const bitsOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

async function folderStore(channels: 1 | 3): Promise<PixelStore> {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [5, 1], y: [5, 1] }, kind: 'jpg' });
  const cfg = resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=8', 'data.stored_size=10', `data.channels=${channels}`, `data.cache_dir=${path.join(tmpDir(), 'c')}`])]);
  return (await loadDataset(cfg, quiet)).train.x;
}

/** Decoded on the device (a gather from the code table) vs made on the host as floats: one batch each way. */
async function bothWays(store: PixelStore, augment: AugmentKind[], norm: Normalization): Promise<{ host: Float32Array; device: Float32Array }> {
  store.norm = norm;
  const shape = store.shape as [number, number, number];
  const size = store.size;
  const index = Int32Array.from({ length: store.length }, (_, i) => (i * 7) % store.length);
  const labels = new Int32Array(store.length);
  const b = store.length;
  const spec = { size, shape, augment, seed: 5 };
  const host = new Float32Array(b * size);
  fillBatch(store, spec, index, labels, 0, b, 3, host, new Int32Array(b));
  const codes = new Int32Array(b * size);
  fillBatch(store, { ...spec, codes: true }, index, labels, 0, b, 3, codes, new Int32Array(b));
  const up = new DeviceBatches(true, store, shape);
  const t = up.toDevice({ x: codes, y: labels, b });
  const device = (await t.x.data()) as Float32Array;
  assert.equal(t.x.dtype, 'float32');
  assert.deepEqual(t.x.shape, [b, ...shape]);
  tf.dispose([t.x, t.y]);
  up.dispose();
  return { host, device };
}

test('batches decoded on the device are bit-identical to the host floats: 1 and 3 channels, no/ImageNet/dataset normalisation, flip and crop', async () => {
  for (const channels of [1, 3] as const) {
    const store = await folderStore(channels);
    const C = channels;
    const norms: Normalization[] = [null, { mean: IMAGENET_MEAN.slice(0, C), std: IMAGENET_STD.slice(0, C) }, { mean: [0.3127, 0.55, 0.4].slice(0, C), std: [0.2871, 0.19, 0.33].slice(0, C) }];
    for (const norm of norms) {
      for (const augment of [[], ['flip', 'crop']] as AugmentKind[][]) {
        const { host, device } = await bothWays(store, augment, norm);
        assert.ok(bitsOf(host).equals(bitsOf(device)), `C=${C} norm=${JSON.stringify(norm)} augment=${augment}`);
        // Not vacuous: the pixels vary, and augmentation moved them.
        assert.ok(new Set(host).size > 10);
      }
    }
    // No augmentation: the evaluation view itself.
    store.norm = null;
    const { device } = await bothWays(store, [], null);
    const order = Int32Array.from({ length: store.length }, (_, i) => (i * 7) % store.length);
    const all = readAll(store, true);
    const expect = new Float32Array(device.length);
    order.forEach((j, i) => expect.set(all.subarray(j * store.size, (j + 1) * store.size), i * store.size));
    assert.ok(bitsOf(expect).equals(bitsOf(device)));
    store.close();
  }
});

test('code batches: the prefetch worker makes the same codes as the training thread; codes only where they apply', async () => {
  const store = await folderStore(3);
  const spec = { size: store.size, shape: store.shape as [number, number, number], augment: ['flip', 'crop'] as AugmentKind[], seed: 2, codes: true };
  const index = Int32Array.from([0, 3, 5, 1, 2, 4, 6, 7, 9, 8]);
  const labels = Int32Array.from(index, (i) => i % 2);
  const take = (src: InlineBatches | PrefetchedBatches) => {
    src.epoch(index, labels, 0, 4);
    const out = [0, 1, 2].map(() => {
      const bt = src.next();
      assert.ok(bt.x instanceof Int32Array);
      return [Array.from(bt.x.subarray(0, bt.b * spec.size)), Array.from(bt.y.subarray(0, bt.b))];
    });
    src.close();
    return out;
  };
  const inline = take(new InlineBatches(store, spec, 4));
  assert.deepEqual(take(new PrefetchedBatches(store, spec, 4)), inline);
  // Codes are channel-tagged bytes.
  const flat = inline.flatMap(([x]) => x);
  assert.ok(flat.every((v, i) => v >= 0 && v < 3 * 256 && Math.floor(v / 256) === i % 3));
  // Where codes apply: a store of bytes, without random_resized_crop, on device memory (or forced).
  const saved = process.env.GRANULAR_DEVICE_DECODE;
  delete process.env.GRANULAR_DEVICE_DECODE;
  try {
    assert.equal(decodeOnDevice(store, ['flip'], true), true);
    assert.equal(decodeOnDevice(store, ['flip'], false), false);
    assert.equal(decodeOnDevice(store, ['random_resized_crop'], true), false);
    const floats = { ...store, readCodes: undefined } as unknown as PixelStore;
    assert.equal(decodeOnDevice(floats, [], true), false);
    process.env.GRANULAR_DEVICE_DECODE = '1';
    assert.equal(decodeOnDevice(store, [], false), true);
    process.env.GRANULAR_DEVICE_DECODE = '0';
    assert.equal(decodeOnDevice(store, [], true), false);
  } finally {
    if (saved === undefined) delete process.env.GRANULAR_DEVICE_DECODE;
    else process.env.GRANULAR_DEVICE_DECODE = saved;
  }
  store.close();
});

test('a run whose batches are decoded on the device trains bit-identically to one given host floats', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nG,z\nH,y\n', leaves: { x: [8, 3], y: [8, 3], z: [8, 3] } });
  const cache = path.join(tmpDir(), 'cache');
  const args = (dir: string) => [
    'pretrain', '--set', 'data.format=imagefolder', '--set', `data.root=${root}`, '--set', 'data.image_size=8', '--set', 'data.channels=3', '--set', `data.cache_dir=${cache}`,
    '--set', 'data.normalize=imagenet', '--set', 'data.augment=[flip, crop]', '--set', 'model.arch=cnn-small', '--set', 'model.width=0.25',
    '--set', 'train.epochs=2', '--set', 'train.batch_size=5', '--set', 'eval.dynamics_every=0', '--level', 'leaf', '--run-dir', dir, '--quiet',
  ];
  const dirs = { host: path.join(tmpDir(), 'host'), device: path.join(tmpDir(), 'device') };
  for (const [way, dir] of Object.entries(dirs)) {
    const r = cli(args(dir), { env: { GRANULAR_DEVICE_DECODE: way === 'device' ? '1' : '0' } });
    assert.equal(r.code, 0, r.stderr);
  }
  const timing = /seconds|per_second|num_tensors/;
  const rows = (dir: string) => metricRows(dir).map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => !timing.test(k))));
  assert.deepEqual(rows(dirs.device), rows(dirs.host));
  assert.ok(fs.readFileSync(path.join(dirs.device, 'model', 'weights.bin')).equals(fs.readFileSync(path.join(dirs.host, 'model', 'weights.bin'))));
  assert.equal(readJson(path.join(dirs.device, 'summary.json')).status, 'completed');
  // The decode table is the one extra tensor alive during the run's epochs.
  const tensors = (dir: string) => metricRows(dir).filter((r) => r.kind === 'epoch' && Number(r.epoch) >= 1).map((r) => Number(r.num_tensors));
  assert.deepEqual(tensors(dirs.device), tensors(dirs.host).map((n) => n + 1));
});
