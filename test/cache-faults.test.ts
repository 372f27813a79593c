/**
 * Faults on the record cache's path (issue 22, item 7), each ending as DESIGN
 * says: exit 2 naming the path and what to do before a run folder exists, a
 * read-only prebuilt cache used read-only, skip reasons checked again.
 *
 * Unreadable files and read-only folders need a user the kernel refuses:
 * as root (which reads and writes past permissions) the CLI runs as `nobody`
 * through setpriv (util-linux); as any other user, as itself.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { decodeImage } from '../src/data/formats/decode';
import { recordMeanStd, statsEntryBytes } from '../src/data/cache/records';
import { readAll } from '../src/data/cache/store';
import { UsageError } from '../src/util/errors';
import { CLI, cli, CliResult, readJson, ROOT, tmpDir } from './helpers';
import { writeFolderDataset } from './data-fixtures';

const AS_ROOT = process.getuid?.() === 0;

/** The CLI as a user without root's powers over permissions (nobody, when this process is root). */
function cliUnprivileged(args: string[]): CliResult {
  const [cmd, pre] = AS_ROOT ? ['setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath]] : [process.execPath, []];
  const r = spawnSync(cmd, [...pre, CLI, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, HOME: '/tmp' }, timeout: 120_000 });
  if (r.error) throw r.error;
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** A folder everyone may read (and, with `write`, write), as the unprivileged CLI needs. */
function openDir(write = false): string {
  const d = tmpDir();
  fs.chmodSync(d, write ? 0o777 : 0o755);
  return d;
}

const TAX = 'group,leaf\nG,x\nH,y\n';
const sets = (root: string, cache: string, ...more: string[]) =>
  ['data.format=imagefolder', `data.root=${root}`, 'data.image_size=8', `data.cache_dir=${cache}`, 'data.val_fraction=0', 'train.epochs=1', 'eval.dynamics_every=0', ...more].flatMap((x) => ['--set', x]);
const cfgFor = (root: string, cache: string, ...more: string[]) =>
  resolveConfig([parseSets(['data.format=imagefolder', `data.root=${root}`, 'data.image_size=8', `data.cache_dir=${cache}`, 'data.channels=3', ...more])]);

/** Every file of a folder with its size and modification time. */
const snapshot = (dir: string) => fs.readdirSync(dir).sort().map((f) => { const st = fs.statSync(path.join(dir, f)); return `${f} ${st.size} ${st.mtimeMs}`; });

test('a read-only prebuilt record cache is used read-only (the run completes, nothing written); a read-only empty cache folder is exit 2 naming it', async () => {
  const root = openDir();
  await writeFolderDataset(root, { taxonomy: TAX, leaves: { x: [4, 2], y: [4, 2] } });
  const runs = openDir(true);
  const cache = path.join(openDir(true), 'cache');
  const built = cli(['pretrain', '--run-dir', path.join(runs, 'a'), ...sets(root, cache)]);
  assert.equal(built.code, 0, built.stderr);
  // Read-only for everyone (as a shared, prebuilt cache on a read-only mount would be).
  for (const f of fs.readdirSync(cache)) fs.chmodSync(path.join(cache, f), 0o444);
  fs.chmodSync(cache, 0o555);
  const before = snapshot(cache);
  const r = cliUnprivileged(['pretrain', '--run-dir', path.join(runs, 'b'), ...sets(root, cache)]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /the record cache folder '.*cache' is read-only here \((EACCES|EROFS)\): using its records as they are/);
  assert.equal(readJson<{ status: string }>(path.join(runs, 'b', 'summary.json')).status, 'completed');
  assert.deepEqual(snapshot(cache), before, 'nothing in the read-only cache was written');

  const empty = path.join(openDir(), 'empty-cache');
  fs.mkdirSync(empty, { mode: 0o555 });
  fs.chmodSync(empty, 0o555);
  const e = cliUnprivileged(['pretrain', '--run-dir', path.join(runs, 'c'), ...sets(root, empty)]);
  assert.equal(e.code, 2, e.stderr);
  assert.match(e.stderr, /the record cache folder '.*empty-cache' cannot be written by this process \((EACCES|EROFS)\) and holds no record cache of this data .* Make the folder writable .*or set data\.cache_dir/);
  assert.equal(fs.existsSync(path.join(runs, 'c')), false, 'no run folder');
});

/** Unmount a test's tmpfs, waiting up to 10 s for what still holds a file there (a worker thread, a child's last breath) to let go. */
function unmount(mnt: string): void {
  for (let i = 0; ; i++) {
    try {
      execFileSync('umount', [mnt], { stdio: 'pipe' });
      return;
    } catch (e) {
      if (i >= 50) throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
    }
  }
}

test('a full disk under the record cache: exit 2 naming the folder, the files cut back (nothing half-written kept); with room the next load decodes every image right', async (t) => {
  const mnt = tmpDir('granular-tmpfs-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { stdio: 'ignore' });
  } catch {
    t.skip('cannot mount a small tmpfs here (needs root); the ENOSPC path is not exercised');
    return;
  }
  try {
    const root = tmpDir();
    // 60 images of 96x96x3 bytes: 1.7 MB of records, more than the 1 MB disk.
    await writeFolderDataset(root, { taxonomy: TAX, leaves: { x: [28, 2], y: [28, 2] } });
    const cfg = () => cfgFor(root, mnt, 'data.image_size=96', 'data.duplicates=keep');
    await assert.rejects(loadDataset(cfg(), () => {}), (e: Error) => {
      assert.ok(e instanceof UsageError, e.stack);
      assert.match(e.message, new RegExp(`the disk holding the record cache folder '${mnt}' is full \\(ENOSPC\\) .* need about [0-9.]+ MB there\\. .*Free space on that disk, or set data\\.cache_dir`));
      return true;
    });
    const left = fs.readdirSync(mnt);
    assert.deepEqual(left.filter((f) => f.endsWith('.tmp')), [], 'no temporary file left');
    // No catalogue was saved (fewer images than a checkpoint): every data file is cut back to nothing.
    assert.deepEqual(left.filter((f) => f.endsWith('.catalog')), []);
    for (const f of left.filter((f) => /\.(u8|stats|sums)$/.test(f))) assert.equal(fs.statSync(path.join(mnt, f)).size, 0, f);
    // The CLI: exit 2, no run folder.
    const runs = tmpDir();
    const r = cli(['pretrain', '--run-dir', path.join(runs, 'r'), ...sets(root, mnt, 'data.image_size=96', 'data.channels=3')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /is full \(ENOSPC\)/);
    assert.equal(fs.existsSync(path.join(runs, 'r')), false);
    // Room again: the store decodes and serves the true pixels.
    execFileSync('mount', ['-o', 'remount,size=8m', mnt]);
    const d = await loadDataset(cfg(), () => {});
    const want: number[] = [];
    for (const id of d.train.ids) for (const v of await decodeImage(fs.readFileSync(path.join(root, id)), 96, 3)) want.push(Math.fround(v * (1 / 255)));
    assert.deepEqual(Array.from(readAll(d.train.x, true)), want);
    // The deferred stamp check reads the store from a worker thread: let it finish before the disk goes away.
    await d.trainVerified?.();
    d.train.x.close();
    d.test.x.close();
  } finally {
    unmount(mnt);
  }
});

test('a damaged normalisation statistics file is never read as garbage: bad entries are recomputed from the records, said, and written back', async () => {
  const root = tmpDir();
  const cache = path.join(tmpDir(), 'cache');
  await writeFolderDataset(root, { taxonomy: TAX, leaves: { x: [5, 1], y: [5, 1] } });
  const d = await loadDataset(cfgFor(root, cache), () => {});
  const spec = d.train.x.spec();
  assert.equal(spec.kind, 'records');
  if (spec.kind !== 'records') return;
  // The truth: mean and std over the decoded training pixels.
  const px = readAll(d.train.x, true);
  const mean = [0, 1, 2].map((c) => px.filter((_, i) => i % 3 === c).reduce((a, b) => a + b, 0) / (px.length / 3));
  const std = [0, 1, 2].map((c) => Math.sqrt(px.filter((_, i) => i % 3 === c).reduce((a, b) => a + b * b, 0) / (px.length / 3) - mean[c] ** 2));
  const lines: string[] = [];
  const close = (got: { mean: number[]; std: number[] }) => {
    got.mean.forEach((m, c) => assert.ok(Math.abs(m - mean[c]) < 1e-6, `mean ${got.mean} vs ${mean}`));
    got.std.forEach((s, c) => assert.ok(Math.abs(s - std[c]) < 1e-6, `std ${got.std} vs ${std}`));
  };
  close(recordMeanStd(spec.loc, spec.rows, (l) => lines.push(l)));
  assert.equal(lines.length, 0);
  const file = path.join(cache, fs.readdirSync(cache).find((f) => f.endsWith('.stats'))!);
  const per = statsEntryBytes(3);
  const b = fs.readFileSync(file);
  // Flip a byte inside the sums of record 2 (keeping the file's size).
  b[2 * per + 3] ^= 0x40;
  fs.writeFileSync(file, b);
  close(recordMeanStd(spec.loc, spec.rows, (l) => lines.push(l)));
  assert.equal(lines.length, 1);
  assert.match(lines[0], new RegExp(`warning: 1 entry of the normalisation statistics ${file.replace(/[.]/g, '\\.')} failed their checksum or were missing: recomputed from the records and written back`));
  // Written back: the next read is clean.
  close(recordMeanStd(spec.loc, spec.rows, (l) => lines.push(l)));
  assert.equal(lines.length, 1);
  // Cut off: the missing entries are recomputed too.
  fs.truncateSync(file, 3 * per + 5);
  close(recordMeanStd(spec.loc, spec.rows, (l) => lines.push(l)));
  assert.match(lines[1], /warning: 7 entries of the normalisation statistics/);
});

test('an image file whose name is not valid UTF-8 is refused with exit 2 naming it (escaped), never "vanished while the dataset was being read"', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: TAX, leaves: { x: [3, 1], y: [3, 1] } });
  const png = fs.readFileSync(path.join(root, 'train', 'x', 'img0.png'));
  // "f\xff.png": 0xff is never valid UTF-8.
  fs.writeFileSync(Buffer.concat([Buffer.from(path.join(root, 'train', 'x') + '/'), Buffer.from([0x66, 0xff, 0x2e, 0x70, 0x6e, 0x67])]), png);
  const cache = path.join(tmpDir(), 'cache');
  const want = /'.*train\/x' holds an image whose name is not valid UTF-8: "f\\xff\.png" \(bytes 66 ff 2e 70 6e 67\)\. .*Rename it to UTF-8/;
  await assert.rejects(loadDataset(cfgFor(root, cache), () => {}), (e: Error) => e instanceof UsageError && want.test(e.message));
  const runs = tmpDir();
  const r = cli(['pretrain', '--run-dir', path.join(runs, 'r'), ...sets(root, cache)]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, want);
  assert.doesNotMatch(r.stderr, /vanished/);
  assert.equal(fs.existsSync(path.join(runs, 'r')), false);
});

test('an image unreadable (EACCES) and readable again is decoded on the next run: the skip reason is checked again, not kept', async () => {
  const root = openDir();
  await writeFolderDataset(root, { taxonomy: TAX, leaves: { x: [4, 1], y: [4, 1] } });
  const img = path.join(root, 'train', 'x', 'img1.png');
  const hierarchy = (cache: string, verify: string) => {
    const r = cliUnprivileged(['hierarchy', '--json', ...['data.format=imagefolder', `data.root=${root}`, 'data.image_size=8', `data.cache_dir=${cache}`, `data.verify=${verify}`].flatMap((x) => ['--set', x])]);
    assert.equal(r.code, 0, r.stderr);
    return { skipped: (JSON.parse(r.stdout) as { skipped_images: number }).skipped_images, stderr: r.stderr };
  };
  // data.verify=folders: chmod moves neither the file's size nor its folder's time.
  for (const verify of ['files', 'folders']) {
    const cache = path.join(openDir(true), 'cache');
    fs.chmodSync(img, 0o000);
    const first = hierarchy(cache, verify);
    assert.equal(first.skipped, 1, verify);
    assert.match(first.stderr, /skipped 1 image\(s\) could not be decoded: train\/x\/img1\.png \(EACCES/);
    fs.chmodSync(img, 0o644);
    const second = hierarchy(cache, verify);
    assert.equal(second.skipped, 0, `${verify}: ${second.stderr}`);
    assert.match(second.stderr, verify === 'folders' ? /1 image\(s\) that could not be read before can be read now: decoding them/ : /1 image\(s\) (changed since they were cached|that could not be read before can be read now)/);
  }
});

test('an image emptied after caching is skipped as a cold cache skips it (same split), not a run marked failed', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: TAX, leaves: { x: [6, 1], y: [6, 1] } });
  const runs = tmpDir();
  const warm = path.join(tmpDir(), 'cache');
  const args = (dir: string, cache: string) => ['pretrain', '--run-dir', path.join(runs, dir), ...sets(root, cache, 'data.val_fraction=0.2')];
  const a = cli(args('a', warm));
  assert.equal(a.code, 0, a.stderr);
  fs.truncateSync(path.join(root, 'train', 'x', 'img2.png'), 0);
  const b = cli(args('b', warm));
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stderr, /skipped 1 image\(s\) could not be decoded: train\/x\/img2\.png/);
  const c = cli(args('c', path.join(tmpDir(), 'cold')));
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stderr, /skipped 1 image\(s\) could not be decoded: train\/x\/img2\.png/);
  type SplitJson = { train: string[]; val: string[] };
  const split = (dir: string) => readJson<SplitJson>(path.join(runs, dir, 'split.json'));
  for (const part of ['train', 'val'] as const) {
    assert.ok(!split('b')[part].includes('train/x/img2.png'));
    assert.deepEqual(split('b')[part], split('c')[part], part);
  }
  assert.equal(readJson<{ skipped_images: number }>(path.join(runs, 'b', 'summary.json')).skipped_images, 1);
});
