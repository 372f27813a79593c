import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { readAll } from '../src/data/cache/store';
import { ZipFile } from '../src/data/formats/zip';

const ZIP = path.resolve(__dirname, '..', '..', '..', 'shared', 'data', 'omniglot', 'images_background_small1.zip');
const skip = fs.existsSync(ZIP) ? {} : { skip: `the Omniglot zip is missing (${ZIP})` };

test('zip reader: the central directory lists every Omniglot image; entries inflate to PNGs', skip, () => {
  const zip = new ZipFile(ZIP);
  const pngs = zip.entries.filter((e) => e.name.endsWith('.png'));
  assert.equal(pngs.length, 2720);
  const buf = zip.read(pngs[0]);
  assert.equal(buf.length, pngs[0].size);
  assert.equal(buf.subarray(1, 4).toString(), 'PNG');
  assert.equal(buf[24], 1, '1-bit PNG');
  zip.close();
});

test('omniglot: alphabet -> character from the zip, split by drawer, 1-bit PNGs resized into [0,1]', skip, async () => {
  const cfg = resolveConfig([parseSets(['data.format=omniglot', `data.root=${ZIP}`, 'data.image_size=20', 'data.cache_dir=null'])]);
  const ds = await loadDataset(cfg, () => {});
  const h = ds.hierarchy;
  assert.equal(h.classes.length, 136);
  assert.deepEqual(h.resolveLevel('alphabet').classes, ['Balinese', 'Early_Aramaic', 'Greek', 'Korean', 'Latin']);
  assert.equal(h.resolveLevel('character').classes.length, 136);
  assert.equal(ds.train.y.length, 2040);
  assert.equal(ds.test.y.length, 680);
  assert.equal(ds.skipped, 0);
  const drawer = (id: string) => Number(id.match(/_(\d+)\.png$/)![1]);
  assert.ok(ds.train.ids.every((id) => drawer(id) <= 15));
  assert.ok(ds.test.ids.every((id) => drawer(id) >= 16));
  assert.deepEqual(ds.shape, [20, 20, 1]);
  // White paper, dark strokes: mostly near 1, some near 0, all in [0, 1].
  let min = 1, max = 0, sum = 0;
  const px = readAll(ds.train.x);
  for (const v of px) {
    min = Math.min(min, v);
    max = Math.max(max, v);
    sum += v;
  }
  assert.ok(min >= 0 && max <= 1 && min < 0.2 && max > 0.99);
  assert.ok(sum / px.length > 0.7);
  assert.ok(ds.train.ids[0].startsWith('images_background_small1/Balinese/character01/'));
});
