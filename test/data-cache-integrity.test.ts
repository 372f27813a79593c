import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { decodeImage } from '../src/data/formats/decode';
import { readAll } from '../src/data/cache/store';
import { cli, readJson, tmpDir } from './helpers';
import { writeFolderDataset, writeImage } from './data-fixtures';

const cfgFor = (root: string, cache: string, ...sets: string[]) =>
  resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=6', `data.cache_dir=${cache}`, 'data.channels=1', ...sets])]);

/** The pixels a direct decode gives for each train image, in [0, 1], concatenated. */
async function direct(root: string, ids: string[]): Promise<number[]> {
  const out: number[] = [];
  for (const id of ids) for (const v of await decodeImage(fs.readFileSync(path.join(root, id)), 6, 1)) out.push(Math.fround(v * (1 / 255)));
  return out;
}

const store = (cache: string, ext: string) => fs.readdirSync(cache).filter((f) => f.endsWith(ext)).map((f) => path.join(cache, f));

test('record cache: bytes flipped inside a record are never read: the reader refuses, the next load decodes again', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [4, 1], y: [4, 1] } });
  const first = await loadDataset(cfgFor(root, cache), () => {});
  const want = await direct(root, first.train.ids);
  assert.deepEqual(Array.from(readAll(first.train.x)), want);
  // Flip bytes in the middle of the shard (inside record 3), keeping its size and time.
  const [shard] = store(cache, '.u8');
  const st = fs.statSync(shard);
  const b = fs.readFileSync(shard);
  for (let i = 3 * 36 + 10; i < 3 * 36 + 14; i++) b[i] ^= 0xff;
  fs.writeFileSync(shard, b);
  fs.utimesSync(shard, st.atime, st.mtime);
  const second = await loadDataset(cfgFor(root, cache), () => {});
  assert.throws(() => readAll(second.train.x), /the record cache .* is damaged: record 3 in .*\.u8 fails its checksum .* The next run decodes the images again/);
  const lines: string[] = [];
  const third = await loadDataset(cfgFor(root, cache), (l) => lines.push(l));
  assert.match(lines.join('\n'), /cannot be used: a run found it damaged \(record 3 .* fails its checksum/);
  assert.deepEqual(Array.from(readAll(third.train.x)), want);
  assert.equal(store(cache, '.damaged').length, 0);
});

test('record cache: a zeroed page of the catalogue is found by its checksum and the store decoded again', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  // Enough images that the catalogue's entries span more than a 4 KiB page.
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [150, 2], y: [150, 2] } });
  const first = await loadDataset(cfgFor(root, cache, 'data.duplicates=keep'), () => {});
  const want = await direct(root, first.train.ids);
  const [catalog] = store(cache, '.catalog');
  const b = fs.readFileSync(catalog);
  assert.ok(b.length > 8192);
  b.fill(0, 4096, 8192);
  fs.writeFileSync(catalog, b);
  const lines: string[] = [];
  const again = await loadDataset(cfgFor(root, cache, 'data.duplicates=keep'), (l) => lines.push(l));
  assert.match(lines.join('\n'), /its catalogue .* is unusable: its contents fail their checksum/);
  assert.deepEqual(Array.from(readAll(again.train.x)), want);
});

test('a run on a record cache with a flipped record fails with the reason (exit 1), never completes; the next run rebuilds and completes', async () => {
  const root = tmpDir();
  const runs = tmpDir();
  const cache = path.join(runs, 'cache');
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [4, 1], y: [4, 1] } });
  const args = (dir: string) => ['pretrain', '--run-dir', path.join(runs, dir), ...['data.format=imagefolder', `data.root=${root}`, 'data.image_size=8', `data.cache_dir=${cache}`, 'data.val_fraction=0', 'train.epochs=1'].flatMap((x) => ['--set', x])];
  const a = cli(args('a'));
  assert.equal(a.code, 0, a.stderr);
  const [shard] = store(cache, '.u8');
  const b = fs.readFileSync(shard);
  b[20] ^= 0x55; // record 0, a training image
  fs.writeFileSync(shard, b);
  const bad = cli(args('b'));
  assert.equal(bad.code, 1, bad.stderr);
  const s = readJson<{ status: string; error: string }>(path.join(runs, 'b', 'summary.json'));
  assert.equal(s.status, 'failed');
  assert.match(s.error, /fails its checksum/);
  const good = cli(args('c'));
  assert.equal(good.code, 0, good.stderr);
  assert.match(good.stderr, /a run found it damaged/);
});

test('file identity: an image replaced by other content with the same size and mtime (cp -p, touch -r) is decoded again', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [3, 1], y: [3, 1] }, kind: 'ppm' });
  const file = path.join(root, 'train/x/img1.ppm');
  const t = new Date('2026-01-02T03:04:05Z');
  fs.utimesSync(file, t, t);
  const first = await loadDataset(cfgFor(root, cache), () => {});
  const st = fs.statSync(file);
  // Same dimensions (PPM: the same byte size), other pixels, the old times put back.
  const other = path.join(tmpDir(), 'other.ppm');
  await writeImage(other, 'ppm', 5, 77);
  assert.equal(fs.statSync(other).size, st.size);
  fs.copyFileSync(other, file);
  fs.utimesSync(file, t, t);
  assert.equal(fs.statSync(file).mtimeMs, st.mtimeMs);
  const lines: string[] = [];
  const second = await loadDataset(cfgFor(root, cache), (l) => lines.push(l));
  assert.match(lines.join('\n'), /1 image\(s\) changed since they were cached/);
  const k = second.train.ids.indexOf('train/x/img1.ppm');
  assert.deepEqual(Array.from(readAll(second.train.x).subarray(k * 36, k * 36 + 36)), (await direct(root, ['train/x/img1.ppm'])));
  assert.notDeepEqual(Array.from(readAll(first.train.x).subarray(k * 36, k * 36 + 36)), Array.from(readAll(second.train.x).subarray(k * 36, k * 36 + 36)));
});

test('folder identity: a class folder swapped for another with the same mtime (mv, rsync -a) is listed again', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  await writeFolderDataset(root, { taxonomy: 'group,leaf\nG,x\nH,y\n', leaves: { x: [3, 1], y: [3, 1] } });
  const old = new Date('2026-01-02T03:04:05Z');
  const x = path.join(root, 'train/x');
  fs.utimesSync(x, old, old);
  const a = await loadDataset(cfgFor(root, cache, 'data.verify=folders'), () => {});
  assert.equal(a.train.ids.length, 6);
  // Another version of the folder, one image more, with the old folder's time.
  const next = path.join(root, 'train/x-next');
  fs.cpSync(x, next, { recursive: true });
  await writeImage(path.join(next, 'img9.png'), 'png', 0, 9);
  fs.utimesSync(next, old, old);
  fs.renameSync(x, path.join(root, 'x-old'));
  fs.renameSync(next, x);
  assert.equal(fs.statSync(x).mtimeMs, old.getTime());
  const b = await loadDataset(cfgFor(root, cache, 'data.verify=folders'), () => {});
  assert.equal(b.train.ids.length, 7);
  assert.ok(b.train.ids.includes('train/x/img9.png'));
});
