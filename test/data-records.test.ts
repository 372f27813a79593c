import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadCatalog, loadDataset } from '../src/data';
import { contentHash, decodeImage } from '../src/data/formats/decode';
import { hashHex } from '../src/data/types';
import { inputNormalization } from '../src/data/labels/normalize';
import { InlineBatches, PrefetchedBatches } from '../src/data/cache/prefetch';
import { HASH_BYTES, RecordReader, syncRecords } from '../src/data/cache/records';
import { makeSplit } from '../src/data/labels/split';
import { changedHere, changedInBackground, fileStamp, stampJob } from '../src/data/cache/stamp';
import { randomResizedCropBox, readAll, RecordStore } from '../src/data/cache/store';
import { Rng } from '../src/util/rng';
import { checkpointState, cli, finalMetrics, metricRows, modelWeights, readJson, runWatching, same, tmpDir } from './helpers';
import { writeFolderDataset, writeImage } from './data-fixtures';

const quiet = () => {};
const cfgFor = (root: string, cache: string | null, ...sets: string[]) =>
  resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=6', `data.cache_dir=${cache === null ? 'null' : cache}`, 'data.channels=1', 'data.duplicates=keep', ...sets])]);

/** The stored bytes of every image of a loaded dataset, by id (train then test). */
function storedBytes(x: RecordStore, ids: string[]): Map<string, Buffer> {
  const spec = x.spec() as Extract<ReturnType<RecordStore['spec']>, { kind: 'records' }>;
  const reader = new RecordReader(spec.loc);
  const out = new Map<string, Buffer>();
  ids.forEach((id, i) => {
    const b = Buffer.alloc(spec.loc.recordBytes);
    reader.read(spec.rows[i], b, 0);
    out.set(id, b);
  });
  reader.close();
  return out;
}

test('record cache: records are bit-identical to a direct decode, across shards, and the second run decodes nothing', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [5, 2], y: [5, 2] }, kind: 'jpg' });
  const cat = loadCatalog(cfgFor(root, cache));
  const ids = [...cat.train.ids, ...cat.test.ids];
  // 36-byte records, 5 per shard: 14 images fill 3 shards.
  const sync = () => syncRecords({ format: 'imagefolder', source: cat.source, ids, size: 6, channels: 1, cacheDir: cache, verify: 'files', log: quiet, shardBytes: 5 * 36 });
  const first = await sync();
  assert.equal(first.decoded, 14);
  assert.deepEqual(fs.readdirSync(cache).filter((f) => f.endsWith('.u8')).length, 3);
  const reader = new RecordReader(first.loc);
  for (let k = 0; k < ids.length; k++) {
    const direct = await decodeImage(fs.readFileSync(path.join(root, ids[k])), 6, 1);
    const got = Buffer.alloc(36);
    reader.read(first.record[k], got, 0);
    assert.deepEqual(got, direct, ids[k]);
  }
  reader.close();
  const second = await sync();
  assert.equal(second.decoded, 0);
  assert.deepEqual(second.record, first.record);
  assert.deepEqual(second.hash, first.hash);
  // Through loadDataset: the evaluation view is the stored image scaled to [0, 1].
  const ds = await loadDataset(cfgFor(root, cache), quiet);
  const px = readAll(ds.train.x);
  const direct = await decodeImage(fs.readFileSync(path.join(root, ds.train.ids[3])), 6, 1);
  assert.deepEqual(px.subarray(3 * 36, 4 * 36), Float32Array.from(direct, (v) => v * (1 / 255)));
  // The same pixels without a persistent cache (a temporary store).
  const temp = await loadDataset(cfgFor(root, null), quiet);
  assert.deepEqual(readAll(temp.train.x), px);
  assert.deepEqual(temp.train.hashes, ds.train.hashes);
  assert.equal(ds.train.hashes!.length, ds.train.y.length * HASH_BYTES);
});

test('record cache: a changed file is decoded again, alone; a damaged catalogue is a warning with the reason', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [3, 1], y: [3, 1] } });
  const cfg = cfgFor(root, cache);
  const before = await loadDataset(cfg, quiet);
  const file = path.join(root, 'train/x/img0.png');
  await writeImage(file, 'png', 4, 0);
  const later = new Date(Date.now() + 5000);
  fs.utimesSync(file, later, later);
  const lines: string[] = [];
  const after = await loadDataset(cfg, (l) => lines.push(l));
  assert.deepEqual(lines, ['1 image(s) changed since they were cached (size or modification time): decoding them again']);
  const was = storedBytes(before.train.x as RecordStore, before.train.ids);
  const now = storedBytes(after.train.x as RecordStore, after.train.ids);
  assert.notDeepEqual(now.get('train/x/img0.png'), was.get('train/x/img0.png'));
  assert.deepEqual(now.get('train/x/img0.png'), await decodeImage(fs.readFileSync(file), 6, 1));
  for (const id of after.train.ids.filter((i) => i !== 'train/x/img0.png')) assert.deepEqual(now.get(id), was.get(id), id);
  // Nothing changed: nothing said, nothing decoded.
  const quietLines: string[] = [];
  await loadDataset(cfg, (l) => quietLines.push(l));
  assert.deepEqual(quietLines, []);
  // A damaged catalogue: decoded again, and the warning says why.
  const catFile = fs.readdirSync(cache).find((f) => f.endsWith('.catalog'))!;
  fs.writeFileSync(path.join(cache, catFile), fs.readFileSync(path.join(cache, catFile)).subarray(0, 100));
  const warned: string[] = [];
  const again = await loadDataset(cfg, (l) => warned.push(l));
  assert.equal(warned.length, 1);
  assert.match(warned[0], /warning: the record cache .* cannot be used: its catalogue .* is unusable: .*cut off.*\. Decoding all 8 images again/);
  assert.deepEqual(readAll(again.train.x), readAll(after.train.x));
  // A shard cut short: the same.
  const shard = fs.readdirSync(cache).find((f) => f.endsWith('.u8'))!;
  fs.truncateSync(path.join(cache, shard), 10);
  warned.length = 0;
  await loadDataset(cfg, (l) => warned.push(l));
  assert.match(warned[0], /cannot be used: its shard .* is 10 bytes, shorter than/);
});

test('record cache: data.verify=folders trusts unchanged folders, notices added files; include/exclude keep the other records', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [3, 1], y: [3, 1] } });
  const cfg = cfgFor(root, cache, 'data.verify=folders');
  // Whole seconds, so that the folder's mtime can be put back exactly.
  const ydir = path.join(root, 'train/y');
  fs.utimesSync(ydir, 1_600_000_000, 1_600_000_000);
  const ids = (c = cfg) => {
    const cat = loadCatalog(c);
    return { cat, ids: [...cat.train.ids, ...cat.test.ids] };
  };
  const sync = (c = cfg) => {
    const { cat, ids: list } = ids(c);
    return syncRecords({ format: 'imagefolder', source: cat.source, ids: list, size: 6, channels: 1, cacheDir: cache, verify: c.data.verify, log: quiet });
  };
  assert.equal((await sync()).decoded, 8);
  // Rewritten in place, same folder mtime: folders mode does not look (files mode does).
  const file = path.join(ydir, 'img1.png');
  await writeImage(file, 'png', 7, 1);
  fs.utimesSync(file, new Date(Date.now() + 5000), new Date(Date.now() + 5000));
  assert.equal((await sync()).decoded, 0);
  assert.equal((await sync(cfgFor(root, cache))).decoded, 1);
  // A new file changes its folder's mtime: that folder is stamped again.
  await writeImage(path.join(root, 'train/y/img9.png'), 'png', 1, 9);
  assert.equal((await sync()).decoded, 1);
  // A run on fewer classes, then on all of them again: nothing decoded twice.
  const only = cfgFor(root, cache, 'data.include=[G]');
  await loadDataset(only, quiet);
  const { cat, ids: all } = ids();
  const back = await syncRecords({ format: 'imagefolder', source: cat.source, ids: all, size: 6, channels: 1, cacheDir: cache, verify: 'files', log: quiet });
  assert.equal(back.decoded, 0);
});

test('listing cache: an unchanged class folder is not read again; added and removed images, and folders changed within the racy window, are read', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [3, 1], y: [3, 1] } });
  const cfg = cfgFor(root, cache);
  const old = 1_600_000_000;
  for (const d of ['train/x', 'train/y', 'test/x', 'test/y']) fs.utimesSync(path.join(root, d), old, old);
  const trainIds = () => loadCatalog(cfg).train.ids;
  assert.deepEqual(trainIds(), ['train/x/img0.png', 'train/x/img1.png', 'train/x/img2.png', 'train/y/img0.png', 'train/y/img1.png', 'train/y/img2.png']);
  const file = path.join(cache, fs.readdirSync(cache).find((f) => f.endsWith('.listing'))!);
  // Planted in the listing of an unchanged folder: served from the cache, so the folder was not read.
  const plant = (dir: string, name: string) => {
    const j = JSON.parse(fs.readFileSync(file, 'utf8'));
    j.folders[fs.realpathSync(path.join(root, dir))].names.push(name);
    fs.writeFileSync(file, JSON.stringify(j));
  };
  plant('train/x', 'planted.png');
  assert.ok(trainIds().includes('train/x/planted.png'));
  // An image added to a folder moves its time: that folder is read again (and the planted name is gone).
  await writeImage(path.join(root, 'train/x/img9.png'), 'png', 1, 9);
  fs.rmSync(path.join(root, 'train/y/img2.png'));
  const now = trainIds();
  assert.ok(now.includes('train/x/img9.png') && !now.includes('train/x/planted.png') && !now.includes('train/y/img2.png'), now.join(' '));
  // train/x changed just now, so its new listing is not trusted yet (a change in the same clock tick would not move its time).
  plant('train/x', 'planted-again.png');
  assert.ok(!trainIds().includes('train/x/planted-again.png'));
  // No cache folder: no listing cache either.
  assert.equal(loadCatalog(cfgFor(root, null)).train.ids.length, 6);
});

test('record cache, deferred check: a training image rewritten in place is found by the worker thread and decoded again before training reads it', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [3, 1], y: [3, 1] } });
  const cfg = cfgFor(root, cache);
  await loadDataset(cfg, quiet);
  // Unchanged: the check finds nothing.
  const same = await loadDataset(cfg, quiet, { deferTrainStamps: true });
  assert.equal(await same.trainVerified!(), 0);
  const file = path.join(root, 'train/y/img1.png');
  await writeImage(file, 'png', 7, 1);
  fs.utimesSync(file, new Date(Date.now() + 5000), new Date(Date.now() + 5000));
  const lines: string[] = [];
  const d = await loadDataset(cfg, (l) => lines.push(l), { deferTrainStamps: true });
  // Until checked, the cached record stands in; the check replaces it (record and content hash), and says so.
  const k = d.train.ids.indexOf('train/y/img1.png');
  const before = storedBytes(d.train.x as RecordStore, d.train.ids).get('train/y/img1.png');
  assert.equal(await d.trainVerified!(), 1);
  assert.equal(await d.trainVerified!(), 1, 'the check runs once');
  assert.deepEqual(lines, ['1 image(s) changed since they were cached (size or modification time): decoding them again']);
  const after = storedBytes(d.train.x as RecordStore, d.train.ids).get('train/y/img1.png');
  assert.notDeepEqual(after, before);
  assert.deepEqual(after, await decodeImage(fs.readFileSync(file), 6, 1));
  assert.equal(hashHex(d.train.hashes!, k), contentHash(fs.readFileSync(file)));
  // A run started on the changed data records the new content hash in split.json.
  await writeImage(file, 'png', 3, 1);
  fs.utimesSync(file, new Date(Date.now() + 9000), new Date(Date.now() + 9000));
  const dir = path.join(tmpDir(), 'r');
  const r = cli(['pretrain', '--quiet', '--run-dir', dir, ...['data.format=imagefolder', `data.root=${root}`, 'data.image_size=6', `data.cache_dir=${cache}`, 'data.channels=1', 'data.duplicates=keep', 'data.val_fraction=0', 'model.arch=cnn-small', 'model.width=0.25', 'train.epochs=1', 'eval.dynamics_every=0'].flatMap((x) => ['--set', x])]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /1 image\(s\) changed since they were cached \(size or modification time\): decoding them again/);
  const split = readJson<{ train: string[]; hashes: { train: string[] } }>(path.join(dir, 'split.json'));
  assert.equal(split.hashes.train[split.train.indexOf('train/y/img1.png')], contentHash(fs.readFileSync(file)));
});

test('decoding: EXIF orientation is applied before resizing; the aspect ratio is kept (centre crop)', async () => {
  const dir = tmpDir();
  const W = 16;
  const halves = Buffer.alloc(W * W * 3);
  for (let y = 0; y < W; y++) for (let x = 0; x < W; x++) halves.fill(x < W / 2 ? 0 : 255, (y * W + x) * 3, (y * W + x) * 3 + 3);
  const file = path.join(dir, 'exif6.jpg');
  await sharp(halves, { raw: { width: W, height: W, channels: 3 } }).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toFile(file);
  const got = await decodeImage(fs.readFileSync(file), 8, 1);
  // Stored: left half black. Shown (rotated 90 degrees clockwise): top half black.
  const rows = Array.from({ length: 8 }, (_, y) => got.subarray(y * 8, y * 8 + 8).reduce((a, b) => a + b, 0) / 8);
  assert.ok(rows[0] < 40 && rows[7] > 215, `row means ${rows.map(Math.round)}`);
  // A 2:1 image: the shorter side becomes 8 and the centre 8 x 8 is kept, not squeezed.
  const wide = Buffer.alloc(32 * 16 * 3);
  for (let y = 0; y < 16; y++) for (let x = 0; x < 32; x++) wide.fill(x < 4 || x >= 28 ? 255 : 0, (y * 32 + x) * 3, (y * 32 + x) * 3 + 3);
  const png = await sharp(wide, { raw: { width: 32, height: 16, channels: 3 } }).png().toBuffer();
  const crop = await decodeImage(png, 8, 1);
  assert.ok(crop.every((v) => v < 10), 'the white side bands fall outside the centre crop');
});

test('transforms: random resized crops are seeded by (train.seed, step); evaluation is the centre crop of the stored image', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [4, 1], y: [4, 1] }, kind: 'png' });
  const ds = await loadDataset(cfgFor(root, path.join(tmpDir(), 'c'), 'data.stored_size=10', 'data.image_size=6', 'data.channels=3'), quiet);
  assert.deepEqual(ds.shape, [6, 6, 3]);
  // Evaluation view = the centre 6 x 6 of the 10 x 10 record.
  const stored = storedBytes(ds.train.x as RecordStore, ds.train.ids).get(ds.train.ids[0])!;
  const view = readAll(ds.train.x).subarray(0, 108);
  for (let y = 0; y < 6; y++) for (let x = 0; x < 6; x++) for (let c = 0; c < 3; c++) assert.equal(view[(y * 6 + x) * 3 + c], Math.fround(stored[((y + 2) * 10 + x + 2) * 3 + c] * (1 / 255)));
  // Boxes: inside the image, areas 8-100 %, aspect 3/4-4/3 up to rounding; the same seed gives the same boxes.
  const boxes = (seed: number) => Array.from({ length: 200 }, () => 0).map(((r) => () => randomResizedCropBox(40, r))(new Rng(seed)));
  const a = boxes(1);
  assert.deepEqual(boxes(1), a);
  assert.notDeepEqual(boxes(2), a);
  for (const b of a) {
    assert.ok(b.top >= 0 && b.left >= 0 && b.top + b.h <= 40 && b.left + b.w <= 40);
    assert.ok(b.h * b.w >= 0.07 * 1600 && b.h * b.w <= 1600);
  }
  // Batches: identical on the worker thread and in place, and from step to step they differ.
  const spec = { size: 108, shape: [6, 6, 3] as [number, number, number], augment: ['random_resized_crop' as const, 'flip' as const], seed: 3 };
  const index = Int32Array.from([0, 1, 2, 3, 4, 5, 6, 7]);
  const labels = new Int32Array(8);
  const take = (src: InlineBatches | PrefetchedBatches) => {
    src.epoch(index, labels, 0, 5);
    const out = [Array.from(src.next().x), Array.from(src.next().x)];
    src.close();
    return out;
  };
  const inline = take(new InlineBatches(ds.train.x, spec, 4));
  assert.deepEqual(take(new PrefetchedBatches(ds.train.x, spec, 4)), inline);
  const again = take(new InlineBatches(ds.train.x, spec, 4));
  assert.deepEqual(again, inline);
  const plain = take(new InlineBatches(ds.train.x, { ...spec, augment: [] }, 4));
  assert.notDeepEqual(plain, inline);
  // No crop asked for: the training view is the evaluation view.
  assert.deepEqual(plain[0], Array.from(readAll(ds.train.x).subarray(0, 4 * 108)));
});

test('data.normalize: dataset statistics from the records equal a direct computation; imagenet constants; stored_size < image_size refused', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [4, 1], y: [4, 1] } });
  const cfg = cfgFor(root, path.join(tmpDir(), 'c'), 'data.channels=3', 'data.normalize=dataset', 'data.val_fraction=0.25');
  const ds = await loadDataset(cfg, quiet);
  const split = makeSplit(ds, cfg);
  const norm = inputNormalization(cfg, ds, split)!;
  const px = readAll(ds.train.x, true);
  for (let c = 0; c < 3; c++) {
    let s = 0;
    let ss = 0;
    let n = 0;
    for (const i of split.train) for (let j = c; j < 108; j += 3) {
      const v = px[i * 108 + j];
      s += v;
      ss += v * v;
      n++;
    }
    const mean = s / n;
    assert.ok(Math.abs(norm.mean[c] - mean) < 1e-6, `mean ${c}`);
    assert.ok(Math.abs(norm.std[c] - Math.sqrt(ss / n - mean * mean)) < 1e-5, `std ${c}`);
  }
  ds.train.x.norm = norm;
  const normed = readAll(ds.train.x);
  assert.ok(Math.abs(normed[0] - (px[0] - norm.mean[0]) / norm.std[0]) < 1e-5);
  const inet = inputNormalization(resolveConfig([parseSets(['data.normalize=imagenet', 'data.channels=3'])]), ds, split)!;
  assert.deepEqual(inet, { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
  const r = cli(['hierarchy', '--set', 'data.format=imagefolder', '--set', `data.root=${root}`, '--set', 'data.stored_size=4', '--set', 'data.image_size=8']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /data.stored_size \(4\) is smaller than data.image_size \(8\)/);
});

test('a run on image files with random resized crops, flips and dataset normalisation, killed mid-epoch, resumes bit-identical', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,a\nG,b\nH,c\nH,d\n', leaves: { a: [10, 2], b: [10, 2], c: [10, 2], d: [10, 2] } });
  const runs = tmpDir();
  const args = (dir: string) => [
    'pretrain', '--quiet', '--run-dir', dir,
    ...['data.format=imagefolder', `data.root=${root}`, `data.cache_dir=${path.join(runs, 'cache')}`, 'data.image_size=8', 'data.stored_size=12', 'data.channels=3',
      'data.augment=[random_resized_crop,flip]', 'data.normalize=dataset', 'model.arch=cnn-small', 'model.width=0.25', 'train.batch_size=4',
      'train.epochs=3', 'train.checkpoint_every_steps=2', 'train.lr=0.05', 'eval.dynamics_every=0'].flatMap((s) => ['--set', s]),
  ];
  const whole = path.join(runs, 'whole');
  const w = cli(args(whole));
  assert.equal(w.code, 0, w.stderr);
  const split = readJson(path.join(whole, 'split.json')) as { normalize: { mean: number[] }; hashes: { train: string[] }; train: string[] };
  assert.equal(split.normalize.mean.length, 3);
  assert.equal(split.hashes.train.length, split.train.length);
  const cut = path.join(runs, 'cut');
  const r = await runWatching(args(cut), (child) => {
    if (fs.existsSync(path.join(cut, 'checkpoint', 'state.json')) && checkpointState(cut).step >= 3) {
      child.kill('SIGKILL');
      return true;
    }
    return false;
  });
  assert.equal(r.signal, 'SIGKILL', 'the run ended before it could be killed');
  const res = cli(['pretrain', '--resume', cut, '--quiet']);
  assert.equal(res.code, 0, res.stderr);
  assert.deepEqual(finalMetrics(cut), finalMetrics(whole));
  const wa = modelWeights(whole);
  for (const [n, v] of modelWeights(cut)) assert.ok(same(v, wa.get(n)!), `weight ${n} differs after resume`);
  const losses = (d: string) => metricRows(d).filter((x) => x.kind === 'epoch').map((x) => x.train_loss);
  assert.deepEqual(losses(cut), losses(whole));
});

test('train.max_steps ends the run mid-epoch, evaluated; first_step_seconds and its parts are recorded', () => {
  const dir = path.join(tmpDir(), 'r');
  const r = cli(['pretrain', '--quiet', '--run-dir', dir, '--set', 'data.synthetic.train_samples=400', '--set', 'data.synthetic.test_samples=50', '--set', 'train.batch_size=32', '--set', 'train.epochs=5', '--set', 'train.max_steps=20', '--set', 'eval.dynamics_every=0']);
  assert.equal(r.code, 0, r.stderr);
  const s = readJson(path.join(dir, 'summary.json'));
  assert.equal(s.status, 'completed');
  assert.equal(s.step, 20);
  assert.equal(s.epoch, 2);
  assert.equal(typeof s.test_acc, 'number');
  assert.ok((s.first_step_seconds as number) > 0);
  // Its parts: the model build and the initial evaluation, each positive and within it.
  const parts = [s.model_build_seconds, s.initial_eval_seconds] as number[];
  assert.ok(parts.every((v) => v > 0), JSON.stringify(parts));
  assert.ok(parts[0] + parts[1] < (s.first_step_seconds as number));
  const rows = metricRows(dir).filter((x) => x.kind === 'epoch');
  // 360 training images (400 less the 10 % validation) at batch 32: 12 steps per epoch.
  assert.deepEqual(rows.map((x) => x.step), [0, 12, 20]);
});

test('a prefetch worker that cannot read the records says why', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [3, 1], y: [3, 1] } });
  const ds = await loadDataset(cfgFor(root, cache), quiet);
  for (const f of fs.readdirSync(cache).filter((x) => x.endsWith('.u8'))) fs.rmSync(path.join(cache, f));
  const src = new PrefetchedBatches(ds.train.x, { size: 36, shape: [6, 6, 1], augment: [], seed: 1 }, 2);
  try {
    src.epoch(Int32Array.from([0, 1, 2, 3]), new Int32Array(4), 0, 0);
    assert.throws(() => src.next(), /the batch prefetch worker failed: ENOENT: no such file or directory, open '.*\.u8'/);
  } finally {
    src.close();
  }
});

test('the stamp check: the worker and this thread name the same changed and vanished files, under root and mapped (onDisk)', async () => {
  const root = tmpDir();
  const elsewhere = path.join(tmpDir(), 'Cafe\u0301.png');
  const files = ['a/1.png', 'a/2.png', 'b/3 with space.png', 'b/4.png'];
  for (const f of files) {
    fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    fs.writeFileSync(path.join(root, f), 'x'.repeat(10));
  }
  fs.writeFileSync(elsewhere, 'y'.repeat(10));
  // The id is NFC; its file is NFD elsewhere (as folderSource maps such names).
  const ids = [...files, 'b/Caf\u00e9.png'];
  const layout = { root, onDisk: new Map([['b/Caf\u00e9.png', elsewhere], ['not/deferred.png', '/nowhere']]) };
  const stamps = ids.map((id) => fileStamp(id.startsWith('b/Caf') ? elsewhere : path.join(root, id))!);
  const job = () => stampJob(layout, ids, Float64Array.from(stamps, (s) => s[0]), Float64Array.from(stamps, (s) => s[1]));
  assert.deepEqual(job().onDisk, new Map([['b/Caf\u00e9.png', elsewhere]]), 'only the mapped ids of this job travel');
  assert.deepEqual(changedHere(job()), []);
  assert.deepEqual(await changedInBackground(job()), []);
  assert.deepEqual(changedHere(stampJob(layout, [], new Float64Array(0), new Float64Array(0))), [], 'an empty job names nothing');
  fs.writeFileSync(path.join(root, 'a/2.png'), 'x'.repeat(11)); // size moved
  fs.rmSync(path.join(root, 'b/3 with space.png')); // gone
  fs.writeFileSync(elsewhere, 'z'.repeat(12)); // the mapped file changed
  assert.deepEqual(changedHere(job()), [1, 2, 4]);
  assert.deepEqual(await changedInBackground(job()), [1, 2, 4]);
});
