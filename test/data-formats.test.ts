import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { parseSets, readConfigFile, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { readAll } from '../src/data/cache/store';
import { tmpDir } from './helpers';
import { writeFolderDataset } from './data-fixtures';

/** The essence of ../shared/cases 01 (hidden entries), 02 (CMYK JPEG), 03 (16-bit PNG), 11 (YAML pitfalls) and 21 (mixed pixel formats), as fast tests. */

const quiet = () => {};
const cfgFor = (root: string, ...sets: string[]) =>
  resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=8', 'data.cache_dir=null', 'data.val_fraction=0', 'data.duplicates=keep', ...sets])]);

const W = 16;
function solid(channels: number, values: number[], bits: 8 | 16): ReturnType<typeof sharp> {
  const a = bits === 8 ? Buffer.alloc(W * W * channels) : new Uint16Array(W * W * channels);
  for (let i = 0; i < W * W; i++) for (let c = 0; c < channels; c++) a[i * channels + c] = values[c];
  return sharp(a, { raw: { width: W, height: W, channels: channels as 1 | 2 | 3 | 4 } });
}

/** Mean of each channel of the test image `id` (values in [0, 1]). */
function meanOf(ds: Awaited<ReturnType<typeof loadDataset>>, id: string): number[] {
  const i = ds.test.ids.indexOf(id);
  assert.ok(i >= 0, `${id} is among the test images (${ds.test.ids.join(', ')})`);
  const [h, w, c] = ds.shape;
  const px = readAll(ds.test.x).subarray(i * h * w * c, (i + 1) * h * w * c);
  return Array.from({ length: c }, (_, ch) => px.filter((_, k) => k % c === ch).reduce((a, b) => a + b, 0) / (h * w));
}

test('hidden entries (.DS_Store, AppleDouble ._x.png, Thumbs.db, notes, .ipynb_checkpoints/) are neither classes nor images (case 01)', async () => {
  const clean = tmpDir();
  const leaves = { a: [6, 3], b: [6, 3], c: [6, 3] } as Record<string, [number, number]>;
  await writeFolderDataset(clean, { taxonomy: 'leaf\na\nb\nc\n', leaves });
  const messy = tmpDir();
  await writeFolderDataset(messy, { taxonomy: 'leaf\na\nb\nc\n', leaves });
  for (const part of ['train', 'test']) {
    fs.writeFileSync(path.join(messy, part, '.DS_Store'), 'junk');
    fs.writeFileSync(path.join(messy, part, 'Thumbs.db'), 'junk');
    fs.writeFileSync(path.join(messy, part, 'a', '._img0.png'), 'AppleDouble resource fork, not a PNG');
    fs.writeFileSync(path.join(messy, part, 'a', 'notes.txt'), 'labelled by hand');
    fs.mkdirSync(path.join(messy, part, '.ipynb_checkpoints'), { recursive: true });
    fs.copyFileSync(path.join(messy, part, 'a', 'img0.png'), path.join(messy, part, '.ipynb_checkpoints', 'img0.png'));
    fs.mkdirSync(path.join(messy, part, 'b', '.ipynb_checkpoints'), { recursive: true });
    fs.copyFileSync(path.join(messy, part, 'a', 'img0.png'), path.join(messy, part, 'b', '.ipynb_checkpoints', 'img0-checkpoint.png'));
  }
  const want = await loadDataset(cfgFor(clean), quiet);
  const got = await loadDataset(cfgFor(messy), quiet);
  assert.deepEqual(got.hierarchy.classes, want.hierarchy.classes);
  assert.equal(got.hierarchy.classes.length, 3);
  assert.deepEqual(got.train.ids, want.train.ids);
  assert.deepEqual(got.test.ids, want.test.ids);
  assert.equal(got.skipped, 0);
  assert.ok([...got.train.ids, ...got.test.ids].every((id) => !/(^|\/)\./.test(id)));
});

test('a CMYK JPEG decodes to the colour of its RGB twin, in 3 channels and in 1, and is not skipped (case 02)', async () => {
  const root = tmpDir();
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), 'leaf\nbrown\nblue\n');
  // In-gamut colours (a saturated one would be clipped by the CMYK conversion itself, not by decoding).
  for (const [cls, colour] of [['brown', [180, 90, 60]], ['blue', [90, 120, 150]]] as const) {
    for (const part of ['train', 'test']) {
      fs.mkdirSync(path.join(root, part, cls), { recursive: true });
      await solid(3, [...colour], 8).jpeg({ quality: 95 }).toFile(path.join(root, part, cls, 'rgb.jpg'));
      await solid(3, [...colour], 8).toColourspace('cmyk').jpeg({ quality: 95 }).toFile(path.join(root, part, cls, 'cmyk.jpg'));
    }
  }
  assert.equal((await sharp(path.join(root, 'test', 'brown', 'cmyk.jpg')).metadata()).space, 'cmyk');
  for (const ch of [3, 1]) {
    const ds = await loadDataset(cfgFor(root, `data.channels=${ch}`), quiet);
    assert.equal(ds.skipped, 0);
    for (const cls of ['brown', 'blue']) {
      const rgb = meanOf(ds, `test/${cls}/rgb.jpg`);
      const cmyk = meanOf(ds, `test/${cls}/cmyk.jpg`);
      assert.equal(cmyk.length, ch);
      const d = Math.max(...rgb.map((v, i) => Math.abs(v - cmyk[i])));
      assert.ok(d <= 20 / 255, `${cls}, ${ch} channel(s): CMYK ${cmyk.map((v) => (v * 255).toFixed(0))} vs RGB ${rgb.map((v) => (v * 255).toFixed(0))}`);
    }
  }
});

test('16-bit PNGs (grey16, rgb16) decode to the values of their 8-bit twins (case 03)', async () => {
  const root = tmpDir();
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), 'leaf\na\nb\n');
  for (const part of ['train', 'test']) {
    fs.mkdirSync(path.join(root, part, 'a'), { recursive: true });
    fs.mkdirSync(path.join(root, part, 'b'), { recursive: true });
    await solid(1, [64], 8).png().toFile(path.join(root, part, 'a', 'g08.png'));
    await solid(1, [64 * 257], 16).toColourspace('grey16').png().toFile(path.join(root, part, 'a', 'g16.png'));
    await solid(3, [255, 0, 128], 8).png().toFile(path.join(root, part, 'b', 'rgb08.png'));
    await solid(3, [65535, 0, 128 * 257], 16).toColourspace('rgb16').png().toFile(path.join(root, part, 'b', 'rgb16.png'));
  }
  assert.equal((await sharp(path.join(root, 'test', 'b', 'rgb16.png')).metadata()).depth, 'ushort');
  for (const ch of [3, 1]) {
    const ds = await loadDataset(cfgFor(root, `data.channels=${ch}`), quiet);
    assert.equal(ds.skipped, 0);
    for (const [eight, sixteen] of [['test/a/g08.png', 'test/a/g16.png'], ['test/b/rgb08.png', 'test/b/rgb16.png']]) {
      const a = meanOf(ds, eight);
      const b = meanOf(ds, sixteen);
      const d = Math.max(...a.map((v, i) => Math.abs(v - b[i])));
      assert.ok(d <= 2 / 255, `${sixteen} vs ${eight}, ${ch} channel(s): ${b} vs ${a}`);
      // Not a blank or saturated decode: the 8-bit twin's value itself.
      assert.ok(a.some((v) => v > 0.1 && v < 0.9), `${eight}: ${a}`);
    }
  }
});

test('mixed pixel formats in one class (grey, grey+alpha, palette, 1-bit, RGBA, GIF, WebP, TIFF, CMYK TIFF, PPM, PGM) decode to their colour in 3 and 1 channels (case 21)', async () => {
  const root = tmpDir();
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), 'leaf\na\nb\n');
  const C = [200, 120, 40];
  const N = W * W;
  for (const part of ['train', 'test']) {
    fs.mkdirSync(path.join(root, part, 'b'), { recursive: true });
    await solid(3, [30, 60, 200], 8).png().toFile(path.join(root, part, 'b', 'blue.png'));
  }
  const d = path.join(root, 'test', 'a');
  fs.mkdirSync(d, { recursive: true });
  fs.mkdirSync(path.join(root, 'train', 'a'), { recursive: true });
  await solid(3, C, 8).png().toFile(path.join(root, 'train', 'a', 'ref.png'));
  await solid(3, C, 8).png().toFile(path.join(d, 'ref_rgb.png'));
  const colour: Record<string, 'rgb' | 'grey150' | 'white'> = {};
  const put = async (name: string, s: ReturnType<typeof sharp> | Buffer, kind: 'rgb' | 'grey150' | 'white') => {
    colour[name] = kind;
    if (Buffer.isBuffer(s)) fs.writeFileSync(path.join(d, name), s);
    else await s.toFile(path.join(d, name));
  };
  await put('grey8.png', solid(1, [150], 8).toColourspace('b-w').png(), 'grey150');
  await put('greyalpha.png', solid(2, [150, 255], 8).toColourspace('b-w').png(), 'grey150');
  await put('palette.png', solid(3, C, 8).png({ palette: true, colours: 4, dither: 0 }), 'rgb');
  await put('onebit.png', solid(1, [255], 8).toColourspace('b-w').png({ palette: true, colours: 2, dither: 0 }), 'white');
  await put('rgba.png', solid(4, [...C, 255], 8).png(), 'rgb');
  await put('anim.gif', solid(3, C, 8).gif(), 'rgb');
  await put('img.webp', solid(3, C, 8).webp({ lossless: true }), 'rgb');
  await put('img.tiff', solid(3, C, 8).tiff(), 'rgb');
  await put('cmyk.tif', solid(3, C, 8).toColourspace('cmyk').tiff(), 'rgb');
  await put('img.ppm', Buffer.concat([Buffer.from(`P6\n${W} ${W}\n255\n`), Buffer.from(Array.from({ length: N }, () => C).flat())]), 'rgb');
  await put('grey.pgm', Buffer.concat([Buffer.from(`P5\n${W} ${W}\n255\n`), Buffer.alloc(N, 150)]), 'grey150');
  for (const ch of [3, 1]) {
    const ds = await loadDataset(cfgFor(root, `data.channels=${ch}`), quiet);
    assert.equal(ds.skipped, 0);
    const ref = meanOf(ds, 'test/a/ref_rgb.png');
    for (const [name, kind] of Object.entries(colour)) {
      const got = meanOf(ds, `test/a/${name}`);
      assert.equal(got.length, ch);
      const want = kind === 'rgb' ? ref : kind === 'white' ? got.map(() => 1) : got.map(() => 150 / 255);
      // The CMYK TIFF goes sRGB -> CMYK -> sRGB in the fixture itself: a wider tolerance.
      const tol = (name === 'cmyk.tif' ? 30 : name === 'palette.png' ? 12 : 3) / 255;
      const diff = Math.max(...want.map((v, i) => Math.abs(v - got[i])));
      assert.ok(diff <= tol, `${name}, ${ch} channel(s): ${got.map((v) => (v * 255).toFixed(0))} vs ${want.map((v) => (v * 255).toFixed(0))}`);
    }
  }
});

test('YAML 1.1 pitfalls in a config file: 1e-3 is a number, no/yes/on stay class names, 007 is never class 7 (case 11)', async () => {
  const root = tmpDir();
  const names = ['no', 'yes', 'on', 'off', '007', '7'];
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), `leaf\n${names.join('\n')}\n`);
  for (const [k, n] of names.entries()) {
    for (const part of ['train', 'test']) {
      fs.mkdirSync(path.join(root, part, n), { recursive: true });
      await solid(3, [k * 40, 255 - k * 40, 100], 8).png().toFile(path.join(root, part, n, 'x.png'));
    }
  }
  const file = (include: string) => {
    const f = path.join(root, `c-${include.replace(/\W/g, '')}.yaml`);
    fs.writeFileSync(f, `data: {format: imagefolder, root: ${root}, image_size: 8, val_fraction: 0, cache_dir: null, duplicates: keep, include: ${include}}\ntrain: {lr: 1e-3, weight_decay: 5e-4}\n`);
    return resolveConfig([readConfigFile(f)]);
  };
  const a = file('[no, yes, on]');
  assert.equal(a.train.lr, 0.001);
  assert.equal(a.train.weight_decay, 0.0005);
  assert.deepEqual((await loadDataset(a, quiet)).hierarchy.classes.map(String).sort(), ['no', 'on', 'yes']);
  // 007 read as a number would be 7 and select the folder '7': refused, or kept as the text '007'.
  let classes: string[] | null = null;
  try {
    classes = (await loadDataset(file('[007, yes]'), quiet)).hierarchy.classes.map(String).sort();
  } catch (e) {
    assert.match((e as Error).message, /data\.include/);
  }
  if (classes) assert.deepEqual(classes, ['007', 'yes']);
});
