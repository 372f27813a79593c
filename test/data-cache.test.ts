import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadCatalog, loadDataset } from '../src/data';
import { cacheKey, decodeCached } from '../src/data/cache';
import { tmpDir } from './helpers';
import { writeFolderDataset, writeImage } from './data-fixtures';

test('decode cache: the second load reads the cache; a changed file invalidates it', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [3, 1], y: [3, 1] } });
  const cfg = resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=6', `data.cache_dir=${cache}`])]);
  const refs = () => {
    const c = loadCatalog(cfg);
    return [...c.train, ...c.test];
  };
  const first = await decodeCached('imagefolder', refs(), 6, 1, cache);
  assert.equal(first.fromCache, false);
  assert.equal(fs.readdirSync(cache).length, 2);
  const second = await decodeCached('imagefolder', refs(), 6, 1, cache);
  assert.equal(second.fromCache, true);
  assert.deepEqual(Buffer.from(second.pixels), Buffer.from(first.pixels));
  // Other size or channels: another entry.
  assert.notEqual(cacheKey('imagefolder', refs(), 6, 1), cacheKey('imagefolder', refs(), 7, 1));
  assert.notEqual(cacheKey('imagefolder', refs(), 6, 1), cacheKey('imagefolder', refs(), 6, 3));
  // Rewrite one image with other content (and a later mtime): decoded again, new pixels.
  const file = path.join(root, 'train/x/img0.png');
  await writeImage(file, 'png', 4, 0);
  const later = new Date(Date.now() + 5000);
  fs.utimesSync(file, later, later);
  const third = await decodeCached('imagefolder', refs(), 6, 1, cache);
  assert.equal(third.fromCache, false);
  assert.notDeepEqual(Buffer.from(third.pixels.subarray(0, 36)), Buffer.from(first.pixels.subarray(0, 36)));
  assert.equal((await decodeCached('imagefolder', refs(), 6, 1, cache)).fromCache, true);
  // A dataset loaded through the cache equals one decoded afresh.
  const cached = await loadDataset(cfg, () => {});
  const fresh = await loadDataset(resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=6', 'data.cache_dir=null'])]), () => {});
  assert.deepEqual(cached.train.x, fresh.train.x);
  assert.deepEqual(cached.test.ids, fresh.test.ids);
});

test('decode cache: a damaged cache entry is ignored and rewritten', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [2, 1], y: [2, 1] } });
  const cfg = resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=6', `data.cache_dir=${cache}`])]);
  const c = loadCatalog(cfg);
  const refs = [...c.train, ...c.test];
  await decodeCached('imagefolder', refs, 6, 1, cache);
  const bin = fs.readdirSync(cache).find((f) => f.endsWith('.u8'))!;
  fs.writeFileSync(path.join(cache, bin), Buffer.alloc(3));
  const again = await decodeCached('imagefolder', refs, 6, 1, cache);
  assert.equal(again.fromCache, false);
  assert.equal(fs.statSync(path.join(cache, bin)).size, refs.length * 36);
});
