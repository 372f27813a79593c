import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { colourFromHeader, fileColour } from '../src/data/labels/channels';
import { cli, readJson, tmpDir } from './helpers';
import { writeFolderDataset } from './data-fixtures';

const rgb = (w = 6, grey = false) => {
  const b = Buffer.alloc(w * w * 3);
  for (let i = 0; i < b.length; i++) b[i] = grey ? Math.floor(i / 3) * 7 : i * 13;
  return sharp(b, { raw: { width: w, height: w, channels: 3 } });
};

test('colourFromHeader: PNG colour types and palettes, JPEG components, GIF tables, Netpbm kinds', async () => {
  const say = async (img: Promise<Buffer>) => colourFromHeader(await img)?.colour;
  assert.equal(await say(rgb().png().toBuffer()), true);
  assert.equal(await say(rgb().toColourspace('b-w').png().toBuffer()), false);
  assert.equal(await say(rgb().png({ palette: true }).toBuffer()), true);
  // A palette whose entries are all grey (a 1-bit or grey-indexed scan) has no colour.
  assert.equal(await say(rgb(6, true).png({ palette: true }).toBuffer()), false);
  assert.equal(await say(rgb().jpeg().toBuffer()), true);
  assert.equal(await say(rgb().toColourspace('b-w').jpeg().toBuffer()), false);
  assert.equal(await say(rgb().gif().toBuffer()), true);
  assert.equal(colourFromHeader(Buffer.from('P6\n2 2\n255\n'))?.colour, true);
  assert.equal(colourFromHeader(Buffer.from('P5\n2 2\n255\n'))?.colour, false);
  // A JPEG whose frame header lies past an EXIF block: found by walking the segments.
  const exif = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe1, 0x10, 0x02]), Buffer.alloc(0x1000)]);
  const plain = await rgb().toColourspace('b-w').jpeg().toBuffer();
  assert.equal(colourFromHeader(Buffer.concat([exif, plain.subarray(2)]))?.colour, false);
  // Cut off before the answer: null, and the caller asks sharp about the whole file.
  assert.equal(colourFromHeader(plain.subarray(0, 20)), null);
  assert.equal((await fileColour(await rgb().webp().toBuffer()))?.colour, true);
  assert.equal((await fileColour(await rgb().toColourspace('b-w').tiff().toBuffer()))?.colour, false);
});

test('data.channels auto: RGB folders train as RGB, grey folders as grey; an explicit value is kept', async () => {
  const colour = tmpDir();
  await writeFolderDataset(colour, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [3, 1], y: [3, 1] } });
  // The same pictures saved as grey PNGs.
  const grey = tmpDir();
  fs.cpSync(colour, grey, { recursive: true });
  for (const part of ['train', 'test'])
    for (const leaf of ['x', 'y'])
      for (const f of fs.readdirSync(path.join(grey, part, leaf))) {
        const file = path.join(grey, part, leaf, f);
        fs.writeFileSync(file, await sharp(file).toColourspace('b-w').png().toBuffer());
      }
  const cfg = (root: string, ...sets: string[]) => resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=8', 'data.cache_dir=null', ...sets])]);
  const a = cfg(colour);
  assert.equal(a.data.channels, 'auto');
  const d = await loadDataset(a, () => {});
  assert.deepEqual(d.shape, [8, 8, 3]);
  assert.equal(a.data.channels, 3);
  assert.match(d.channels!.reason, /^train\/x\/img0\.png is stored in colour \(an RGB PNG\)$/);
  const g = await loadDataset(cfg(grey), () => {});
  assert.deepEqual(g.shape, [8, 8, 1]);
  assert.match(g.channels!.reason, /none of the 6 training images is stored in colour/);
  // One colour image among grey ones makes the dataset colour.
  fs.copyFileSync(path.join(colour, 'train/y/img2.png'), path.join(grey, 'train/y/late-colour.png'));
  const mixed = await loadDataset(cfg(grey), () => {});
  assert.deepEqual(mixed.shape, [8, 8, 3]);
  assert.match(mixed.channels!.reason, /train\/y\/late-colour\.png is stored in colour/);
  assert.deepEqual((await loadDataset(cfg(colour, 'data.channels=1'), () => {})).shape, [8, 8, 1]);
});

test('data.channels auto: the start line and config.yaml say the value and why', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [3, 1], y: [3, 1] } });
  const runs = tmpDir();
  const r = cli(['pretrain', '--set', 'data.format=imagefolder', '--set', `data.root=${root}`, '--set', 'data.image_size=8', '--set', 'data.cache_dir=null', '--set', 'train.epochs=1', '--set', 'data.val_fraction=0', '--run-dir', path.join(runs, 'r')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /\n {2}data\.channels 3 \(auto: train\/x\/img0\.png is stored in colour \(an RGB PNG\)\)\n/);
  const yaml = fs.readFileSync(path.join(runs, 'r', 'config.yaml'), 'utf8');
  assert.match(yaml, /^# data\.channels 3 \(auto: train\/x\/img0\.png is stored in colour/m);
  assert.match(yaml, /^ {2}channels: 3$/m);
  assert.equal(readJson<{ channels: { channels: number } }>(path.join(runs, 'r', 'split.json')).channels.channels, 3);
  // The run's config says 3, so eval and --resume read the same store.
  const ev = cli(['eval', path.join(runs, 'r')]);
  assert.equal(ev.code, 0, ev.stderr);
});

test('granular hierarchy lists a dataset of more than 2,000 images, it does not decode: garbage image files are counted, no record cache is written', async () => {
  const root = tmpDir();
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), 'group,leaf\nG,x\nG,y\nH,z\n');
  // Not one of them decodes: a decoding command would skip them all and stop.
  const sizes: Record<string, [number, number]> = { x: [900, 20], y: [700, 20], z: [500, 20] };
  for (const [leaf, [nTrain, nTest]] of Object.entries(sizes)) {
    for (const [part, n] of [['train', nTrain], ['test', nTest]] as const) {
      fs.mkdirSync(path.join(root, part, leaf), { recursive: true });
      for (let i = 0; i < n; i++) fs.writeFileSync(path.join(root, part, leaf, `${i}.png`), 'not an image');
    }
  }
  const cache = path.join(tmpDir(), 'cache');
  const t0 = Date.now();
  const r = cli(['hierarchy', '--json', '--set', 'data.format=imagefolder', '--set', `data.root=${root}`, '--set', `data.cache_dir=${cache}`, '--set', 'data.val_fraction=0']);
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout);
  assert.equal(rep.train_images, 2100);
  assert.equal(rep.test_images, 60);
  assert.equal(rep.listed_only, true);
  assert.equal(rep.skipped_images, null);
  assert.deepEqual(rep.levels.map((l: { name: string; classes: number; images_max: number }) => [l.name, l.classes, l.images_max]), [['group', 2, 1600], ['leaf', 3, 900]]);
  const written = fs.existsSync(cache) ? fs.readdirSync(cache) : [];
  assert.deepEqual(written.filter((f) => /\.(u8|catalog|stats|sums)$/.test(f)), []);
  assert.ok(Date.now() - t0 < 60_000);
});
