import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import sharp from 'sharp';
import { encodeIdx, parseIdx, readIdx } from '../src/data/formats/idx';
import { FASHION_MNIST_ITEMS, FASHION_MNIST_SYSTEM, makeFashionMnist, subsetPerClass } from '../src/data/formats/fashion-mnist';
import { loadCatalog } from '../src/data';
import { resolveConfig } from '../src/config/load';
import { UsageError } from '../src/util/errors';
import { tmpDir } from './helpers';

/** Fake Fashion-MNIST files: `perClass` images of 5 x 6 per item, pixel values that identify image and position. */
function writeFakeIdx(dir: string, part: 'train' | 't10k', perClass: number): Uint8Array {
  const n = perClass * 10;
  const labels = Uint8Array.from({ length: n }, (_, i) => (i * 7) % 10);
  const px = Uint8Array.from({ length: n * 30 }, (_, j) => (Math.floor(j / 30) * 13 + (j % 30) * 5) % 256);
  fs.writeFileSync(path.join(dir, `${part}-images-idx3-ubyte.gz`), zlib.gzipSync(encodeIdx([n, 6, 5], px)));
  fs.writeFileSync(path.join(dir, `${part}-labels-idx1-ubyte.gz`), zlib.gzipSync(encodeIdx([n], labels)));
  return px;
}

test('IDX parsing: header, gzip or plain, and clear errors for other types and truncation', () => {
  const raw = encodeIdx([2, 3], Uint8Array.from([1, 2, 3, 4, 5, 6]));
  for (const bytes of [raw, zlib.gzipSync(raw)]) {
    const a = parseIdx(bytes, 'x');
    assert.deepEqual(a.dims, [2, 3]);
    assert.deepEqual([...a.data], [1, 2, 3, 4, 5, 6]);
  }
  assert.throws(() => parseIdx(raw.subarray(0, raw.length - 1), 'f.idx'), (e: Error) => e instanceof UsageError && /f\.idx.*announces \[2, 3\] = 6 values but the file holds 5/.test(e.message));
  const float = Buffer.from(raw);
  float[2] = 0x0d;
  assert.throws(() => parseIdx(float, 'f'), /type code 0xd is not unsigned byte/);
  assert.throws(() => parseIdx(Buffer.from('hello'), 'g'), /not an IDX file/);
});

test('per-class subsets are stratified, seeded and nested', () => {
  const labels = Uint8Array.from({ length: 300 }, (_, i) => i % 10);
  const small = subsetPerClass(labels, 10, 5, 3, 'p');
  const large = subsetPerClass(labels, 10, 12, 3, 'p');
  assert.equal(small.length, 50);
  for (let k = 0; k < 10; k++) assert.equal(small.filter((i) => labels[i] === k).length, 5);
  assert.ok(small.every((i) => large.includes(i)), 'a smaller cap is inside a larger one');
  assert.notDeepEqual(subsetPerClass(labels, 10, 5, 4, 'p'), small, 'another seed draws other images');
  assert.deepEqual(subsetPerClass(labels, 10, null, 0, 'p'), Array.from({ length: 300 }, (_, i) => i));
  assert.throws(() => subsetPerClass(labels, 10, 31, 0, 'p'), /class tshirt_top has 30 images, fewer than the 31 asked for/);
});

test('make-fashion-mnist writes an imagefolder with the group/kind/item tree and the original pixels', async () => {
  const root = tmpDir();
  const src = path.join(root, 'src');
  fs.mkdirSync(src);
  const trainPx = writeFakeIdx(src, 'train', 6);
  writeFakeIdx(src, 't10k', 3);
  const out = path.join(root, 'fm');
  const counts = await makeFashionMnist({ source: src, out, trainPerClass: 4, testPerClass: null, seed: 0 });
  assert.deepEqual(counts, { train: 40, test: 30 });
  assert.deepEqual(fs.readdirSync(path.join(out, 'train')).sort(), [...FASHION_MNIST_ITEMS].sort());
  // A written PNG holds exactly the IDX pixels of the image its name gives.
  const bag = path.join(out, 'train', 'bag');
  const file = fs.readdirSync(bag)[0];
  const index = Number(file.replace('.png', ''));
  const meta = await sharp(path.join(bag, file)).metadata();
  assert.deepEqual([meta.width, meta.height, meta.channels], [5, 6, 1], 'a grayscale PNG of W x H');
  const { data } = await sharp(path.join(bag, file)).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([...data], [...trainPx.subarray(index * 30, index * 30 + 30)]);
  // granular reads it: three named levels, 2 groups, 5 kinds, 10 items.
  const cfg = resolveConfig([{ data: { format: 'imagefolder', root: out } }]);
  const h = loadCatalog(cfg).hierarchy;
  assert.deepEqual(['group', 'kind', 'item'].map((l) => h.resolveLevel(l).classes.length), [2, 5, 10]);
  assert.equal(h.path(h.classes.find((c) => c.endsWith('ankle_boot'))!), 'accessory/footwear/ankle_boot');
  assert.equal(h.path(h.classes.find((c) => c.endsWith('shirt') && !c.includes('tshirt'))!), 'clothing/top/shirt');
  // An existing folder is refused; a missing source file names the package.
  await assert.rejects(makeFashionMnist({ source: src, out, trainPerClass: 4, testPerClass: null, seed: 0 }), /already exists/);
  await assert.rejects(makeFashionMnist({ source: root, out: path.join(root, 'x'), trainPerClass: 4, testPerClass: null, seed: 0 }), /dataset-fashion-mnist/);
  assert.equal(fs.existsSync(path.join(root, 'x')), false);
});

test('the system Fashion-MNIST labels parse: 10,000 test labels, 1,000 per item', { skip: fs.existsSync(FASHION_MNIST_SYSTEM) ? false : `${FASHION_MNIST_SYSTEM} not installed` }, () => {
  const l = readIdx(path.join(FASHION_MNIST_SYSTEM, 't10k-labels-idx1-ubyte.gz'));
  assert.deepEqual(l.dims, [10000]);
  const per = new Array(10).fill(0);
  for (const y of l.data) per[y]++;
  assert.deepEqual(per, new Array(10).fill(1000));
});
