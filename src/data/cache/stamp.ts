/**
 * Stamps of image files, [size, mtimeMs], which tell the record cache that an
 * image changed (src/data/cache/records.ts), and the check of many stamps on a
 * worker thread while a run starts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { joinPlain } from '../../util/fsx';

/**
 * A file's identity beyond its size: device, inode, modification and status
 * change times folded into one number (52 bits, exact in a float64). Size and
 * mtime alone are kept by `cp -p`, `rsync -a`, `touch -r`, archives that stamp
 * every entry with one time and folders swapped back with `mv`, while the
 * content changes; a new inode or a ctime (which no user call can set back)
 * moves this. The same idea as git's index (stat data: dev, ino, ctime, mtime, size).
 */
export function statIdentity(st: fs.Stats): number {
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  for (const v of [st.dev, st.ino, st.mtimeMs, st.ctimeMs]) {
    const lo = v % 4294967296 >>> 0;
    const hi = Math.floor(v / 4294967296) >>> 0;
    const frac = Math.round((v % 1) * 1e6) >>> 0;
    for (const w of [lo, hi, frac]) {
      h1 = Math.imul(h1 ^ w, 0x01000193) >>> 0;
      h2 = Math.imul(h2 ^ w, 0x5bd1e995) >>> 0;
      h2 = (h2 ^ (h2 >>> 15)) >>> 0;
    }
  }
  return (h2 & 0xfffff) * 4294967296 + h1;
}

/**
 * [size in bytes, statIdentity] of the file at `abs` (links followed);
 * [-1, the link's identity] for a symbolic link that cannot be followed
 * (listed as an image that cannot be read, so decoding reports it as
 * unreadable, never as vanished); [-1, -1] when it cannot even be looked up
 * (EACCES on a folder above it); null when there is nothing there.
 */
export function fileStamp(abs: string): [number, number] | null {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(abs, { throwIfNoEntry: false });
  } catch {
    st = undefined; // ELOOP, EACCES, ...: as for a dangling link below
  }
  if (st) return [st.size, statIdentity(st)];
  let link: fs.Stats | undefined;
  try {
    link = fs.lstatSync(abs, { throwIfNoEntry: false });
  } catch {
    // EACCES on a folder above it, ...: listed, so an image that cannot be read (its skip is checked again next run)
    return [-1, -1];
  }
  return link?.isSymbolicLink() ? [-1, statIdentity(link)] : null;
}

/**
 * Where image files lie: `root`/id (joined as src/util/fsx.ts joinPlain does),
 * except the ids in `onDisk`, mapped to their absolute path (names on disk in
 * another Unicode normalisation than the id).
 */
export interface FileLayout {
  root: string;
  onDisk: ReadonlyMap<string, string>;
}

/** The file of image `id` under a layout. */
export function filePath(layout: FileLayout, id: string): string {
  return layout.onDisk.get(id) ?? joinPlain(layout.root, id);
}

/**
 * What the stamp worker is sent: files and the stamps the catalogue holds for
 * them. The ids travel as one NUL-separated string (no path holds a NUL): one
 * string of ~25 bytes per image instead of an array of 500k path strings, which
 * the main thread had to build and, to send, flatten (~80 MB of garbage at 500k
 * images, which stayed in the heap through training).
 */
export interface StampJob {
  root: string;
  /** The ids of `onDisk` among these images only. */
  onDisk: Map<string, string>;
  ids: string;
  /** Sizes and modification times, as catalogued, per id. */
  a: Float64Array;
  b: Float64Array;
}

/** The job for images `ids` under `layout`, whose catalogued stamps are `a`, `b`. */
export function stampJob(layout: FileLayout, ids: readonly string[], a: Float64Array, b: Float64Array): StampJob {
  const onDisk = new Map<string, string>();
  if (layout.onDisk.size) for (const id of ids) if (layout.onDisk.has(id)) onDisk.set(id, layout.onDisk.get(id)!);
  return { root: layout.root, onDisk, ids: ids.join('\0'), a, b };
}

/**
 * Indices of the job's images whose stamp differs from the catalogued one (or
 * whose file is gone), found on a worker thread so the caller goes on meanwhile.
 * Rejects if the worker cannot run; the caller then checks in its own thread.
 * Cost: one stat per file (~4 µs each on a virtual machine, 50 k: ~0.2 s).
 */
export function changedInBackground(job: StampJob): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const w = new Worker(path.join(__dirname, 'stamp-worker.js'), { workerData: job });
    w.unref();
    w.once('message', (changed: number[]) => resolve(changed));
    w.once('error', reject);
    w.once('exit', (code) => reject(new Error(`the stamp worker exited with code ${code} before answering`)));
  });
}

/** changedInBackground's answer, computed on this thread. */
export function changedHere(job: StampJob): number[] {
  const out: number[] = [];
  const layout = { root: job.root, onDisk: job.onDisk };
  // No id is empty, but an empty job's string is: ''.split would give one.
  const ids = job.a.length ? job.ids.split('\0') : [];
  for (let i = 0; i < ids.length; i++) {
    const st = fileStamp(filePath(layout, ids[i]));
    if (!st || st[0] !== job.a[i] || st[1] !== job.b[i]) out.push(i);
  }
  return out;
}
