import * as fs from 'node:fs';
import * as path from 'node:path';
import { Config } from '../../config/schema';
import { filterClasses } from '../../hierarchy/transform';
import { Hierarchy } from '../../hierarchy/tree';
import { UsageError } from '../../util/errors';
import { fileStamp, filePath } from './stamp';
import { HASH_BYTES, ImageSource, syncRecords } from './records';
import { relabel } from '../labels/relabel';
import { ChannelsDecision, decideChannels } from '../labels/channels';
import { describeDuplicates, findDuplicates, refuseDuplicates } from '../labels/duplicates';
import { RecordStore } from './store';
import { Dataset, Examples, hashHex } from '../types';

/**
 * The images of one part of a dataset, as columns: half a million images must
 * not cost half a million objects.
 */
export interface Refs {
  /** Stable example ids (relative path or archive entry), as split.json records them. */
  ids: string[];
  /** Dataset class index (into Hierarchy.classes) per image. */
  cls: Int32Array;
}

/**
 * What every file-based format produces before any pixel is decoded: the
 * hierarchy, the images of each part labelled by class index, and where their
 * bytes come from. Filtering, relabelling, decoding, caching and bad-image
 * handling are shared below.
 */
export interface Catalog {
  format: string;
  hierarchy: Hierarchy;
  source: ImageSource;
  train: Refs;
  test: Refs;
}

export type Log = (line: string) => void;
export const stderrLog: Log = (line) => process.stderr.write(`granular: ${line}\n`);

/** "a, b, c and 7 more" */
export function listSome(items: readonly string[], n = 5): string {
  return items.slice(0, n).join(', ') + (items.length > n ? ` and ${items.length - n} more` : '');
}

/** Columns from per-image (id, class) pairs. */
export function refsOf(items: Iterable<{ id: string; cls: number }>): Refs {
  const ids: string[] = [];
  const cls: number[] = [];
  for (const it of items) {
    ids.push(it.id);
    cls.push(it.cls);
  }
  return { ids, cls: Int32Array.from(cls) };
}

/**
 * Images under `root` by their path relative to it. `onDisk` maps the ids
 * whose file is not at root/id (names compared in another normalisation than
 * the one on disk) to their absolute path.
 */
export function folderSource(format: string, root: string, onDisk: ReadonlyMap<string, string> = new Map()): ImageSource {
  const files = { root, onDisk };
  const abs = (id: string) => filePath(files, id);
  return {
    identity: `${format}:${root}`,
    read: (id) => fs.promises.readFile(abs(id)),
    head: (id, bytes) => readHead(abs(id), bytes),
    stamp: (id) => fileStamp(abs(id)),
    files,
    folder: (id) => path.dirname(abs(id)),
  };
}

/** The first `bytes` bytes of a file (fewer when it is shorter). */
export function readHead(file: string, bytes: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(bytes);
    return buf.subarray(0, fs.readSync(fd, buf, 0, bytes, 0));
  } finally {
    fs.closeSync(fd);
  }
}

function remap(refs: Refs, map: (cls: number, i: number) => number): Refs {
  const ids: string[] = [];
  const cls: number[] = [];
  for (let i = 0; i < refs.ids.length; i++) {
    const c = map(refs.cls[i], i);
    if (c < 0) continue;
    ids.push(refs.ids[i]);
    cls.push(c);
  }
  return { ids, cls: Int32Array.from(cls) };
}

/** data.include / data.exclude / data.relabel, applied to the catalog (no pixels involved). */
export function transformCatalog(cat: Catalog, cfg: Config): Catalog {
  let { hierarchy, train, test } = cat;
  if (cfg.data.include.length || cfg.data.exclude.length) {
    const t = filterClasses(hierarchy, cfg.data.include, cfg.data.exclude);
    hierarchy = t.hierarchy;
    train = remap(train, (c) => t.classMap[c]);
    test = remap(test, (c) => t.classMap[c]);
  }
  if (cfg.data.relabel !== null) {
    const r = relabel(hierarchy, cfg, [train.cls, test.cls]);
    hierarchy = r.hierarchy;
    train = { ids: train.ids, cls: r.labels[0] };
    test = { ids: test.ids, cls: r.labels[1] };
  }
  return { ...cat, hierarchy, train, test };
}

/**
 * The catalogue as a run would train on it, from the listing alone (no pixel
 * read): data.include/exclude/relabel applied, and every class left with
 * training images (a UsageError naming the empty ones otherwise).
 */
export function listCatalog(cat0: Catalog, cfg: Config): Catalog {
  const size = cfg.data.image_size;
  const stored = cfg.data.stored_size ?? size;
  if (stored < size) throw new UsageError(`data.stored_size (${stored}) is smaller than data.image_size (${size}); crops need room. Set data.stored_size >= data.image_size, or null.`);
  const cat = transformCatalog(cat0, cfg);
  const empty = emptyClasses(cat.hierarchy, cat.train.cls);
  if (empty.length) {
    throw new UsageError(`${empty.length} class(es) have no training images: ${listSome(empty)}. Add images, or leave them out with data.exclude.`);
  }
  return cat;
}

function emptyClasses(h: Hierarchy, labels: Int32Array): string[] {
  const count = new Int32Array(h.classes.length);
  for (const y of labels) count[y]++;
  return h.classes.filter((_, i) => count[i] === 0).map((c) => h.path(c));
}

/**
 * Filter, decode (once, into the record cache), drop bad images, and check
 * that no class is left empty. The examples' pixels stay on disk.
 */
export async function materialize(cat0: Catalog, cfg: Config, log: Log = stderrLog, opts: LoadOptions = {}): Promise<Dataset> {
  const cat = listCatalog(cat0, cfg);
  const h = cat.hierarchy;
  const size = cfg.data.image_size;
  const stored = cfg.data.stored_size ?? size;
  const channels = await settleChannels(cat, cfg);
  const C = channels.channels;
  const nTrain = cat.train.ids.length;
  const ids = nTrain ? cat.train.ids.concat(cat.test.ids) : cat.test.ids.slice();
  const cacheDir = cfg.data.cache_dir === null ? null : path.resolve(cfg.data.cache_dir);
  const syncOptions = { format: cat.format, source: cat.source, ids, size: stored, channels: C, cacheDir, verify: cfg.data.verify, log };
  const synced = await syncRecords({ ...syncOptions, ...(opts.deferTrainStamps ? { deferred: { start: 0, end: nTrain } } : {}) });
  if (synced.bad.length) {
    const first = synced.bad.slice(0, 3).map((b) => `${ids[b.index]} (${b.reason})`);
    const msg = `${synced.bad.length} image(s) could not be decoded: ${first.join(', ')}${synced.bad.length > 3 ? ', ...' : ''}`;
    if (cfg.data.on_bad_image === 'fail') throw new UsageError(`${msg}. Fix or remove them, or set data.on_bad_image=skip.`);
    log(`warning: skipped ${msg}`);
  }
  // `drop`: images (index into refs) left out besides the undecodable ones.
  const part = (from: number, refs: Refs, drop?: Uint8Array): Examples & { rows: Int32Array; hashes: Uint8Array } => {
    const usable = (i: number) => synced.record[from + i] >= 0 && !(drop && drop[i]);
    let keep = 0;
    for (let i = 0; i < refs.ids.length; i++) if (usable(i)) keep++;
    const rows = new Int32Array(keep);
    const y = new Int32Array(keep);
    const hashes = new Uint8Array(keep * HASH_BYTES);
    const kept: string[] = new Array(keep);
    let k = 0;
    for (let i = 0; i < refs.ids.length; i++) {
      const r = synced.record[from + i];
      if (!usable(i)) continue;
      rows[k] = r;
      y[k] = refs.cls[i];
      kept[k] = refs.ids[i];
      hashes.set(synced.hash.subarray((from + i) * HASH_BYTES, (from + i + 1) * HASH_BYTES), k * HASH_BYTES);
      k++;
    }
    const x = new RecordStore({ kind: 'records', loc: synced.loc, rows, shape: [size, size, C], norm: null });
    return { x, y, ids: kept, hashes, rows };
  };
  const train = part(0, cat.train);
  // The dataset's own duplicates, among the decodable test images.
  const testAll = part(nTrain, cat.test);
  const dups = findDuplicates(train, testAll, cfg.data.duplicates);
  const found = dups.record.test_in_train + dups.record.test_label_conflicts;
  if (found && cfg.data.duplicates === 'refuse') throw refuseDuplicates(dups.record, cat.format);
  let test = testAll;
  let testInTrain = dups.inTrain;
  // A test set made only of training images is no public dataset's quirk but a copy (a fixture, a smoke test):
  // dropping them all would leave nothing to score, so they stay, said loudly, and split.json records it.
  const allDuplicates = found > 0 && found === testAll.y.length;
  if (allDuplicates && cfg.data.duplicates === 'drop_test') {
    dups.record.dropped = 0;
    dups.record.kept_all = true;
    log(`warning: every test image (${found}) is one of the dataset's own duplicates; data.duplicates=drop_test would leave no test set, so they are kept: test accuracy here measures images the network trains on. Put other images in the test set, or set data.duplicates=keep to say this is intended.`);
  }
  if (found && cfg.data.duplicates === 'drop_test' && !allDuplicates) {
    // Back from usable-test order to catalogue order, so part() can leave them out.
    const drop = new Uint8Array(cat.test.ids.length);
    let j = 0;
    for (let i = 0; i < cat.test.ids.length; i++) if (synced.record[nTrain + i] >= 0) drop[i] = dups.duplicate[j++];
    test = part(nTrain, cat.test, drop);
    testInTrain = new Uint8Array(test.y.length);
  }
  if (found && !allDuplicates) {
    const what = cfg.data.duplicates === 'drop_test' ? 'left out of the test set (data.duplicates=drop_test; keep scores them, refuse stops)' : 'kept in the test set (data.duplicates=keep)';
    log(`the dataset's own duplicates: ${describeDuplicates(dups.record)}: ${what}`);
  }
  const emptyAfter = emptyClasses(h, train.y);
  if (emptyAfter.length) {
    throw new UsageError(`${emptyAfter.length} class(es) have no readable training images left: ${listSome(emptyAfter)}. Fix the images, or leave the classes out with data.exclude.`);
  }
  if (test.y.length === 0) throw new UsageError(`the ${cat.format} data has no test images. Add a test/ folder, or set data.test_fraction.`);
  const pending = synced.pending;
  let settled: Promise<number> | undefined;
  // The deferred stamp check: training images that changed are decoded again and their records and hashes replaced.
  const settle = async (): Promise<number> => {
    const changed = await pending!;
    if (!changed.length) return 0;
    // Stamps everything again (saying how many changed) and decodes what changed.
    const again = await syncRecords(syncOptions);
    const broken = again.bad.filter((b) => b.index < nTrain && synced.record[b.index] >= 0);
    if (broken.length) throw new TrainImagesBroken(broken.map((b) => `${ids[b.index]} (${b.reason})`));
    let k = 0;
    for (let i = 0; i < nTrain; i++) {
      if (synced.record[i] < 0) continue;
      train.rows[k] = again.record[i];
      train.hashes!.set(again.hash.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES), k * HASH_BYTES);
      k++;
    }
    return changed.length;
  };
  return {
    hierarchy: h, shape: [size, size, C], train, test, skipped: synced.bad.length, channels, duplicates: dups.record, testInTrain,
    duplicateTestIds: found && cfg.data.duplicates === 'drop_test' && !allDuplicates ? new Map(testAll.ids.flatMap((id, j) => (dups.duplicate[j] ? [[id, hashHex(testAll.hashes, j)] as [string, string]] : []))) : new Map(),
    ...(pending ? { trainVerified: () => (settled ??= settle()) } : {}),
  };
}

/**
 * Dataset.trainVerified's answer when training images changed since they were
 * cached into files that cannot be decoded: a cold cache would have skipped
 * them (data.on_bad_image), which changes the listing and so the split, so
 * the caller loads the dataset again (without deferring), before any run
 * folder exists. Left uncaught it is a usage error (exit 2).
 */
export class TrainImagesBroken extends UsageError {
  constructor(readonly images: string[]) {
    super(`${images.length} training image(s) changed since they were cached and can no longer be decoded: ${listSome(images, 3)}. Fix them and start the run again.`);
    this.name = 'TrainImagesBroken';
  }
}

/**
 * data.channels for a file-based dataset: the configured 1 or 3, or for
 * `auto` what the training images' headers say (../labels/channels.ts). Settles
 * cfg.data.channels, so config.yaml records the value a run used.
 */
export async function settleChannels(cat: Catalog, cfg: Config): Promise<ChannelsDecision> {
  const c = cfg.data.channels;
  if (c !== 'auto') return { channels: c, auto: false, reason: 'set in the config' };
  const src = cat.source;
  const d = src.colour ? { channels: src.colour.channels, auto: true, reason: src.colour.reason } : await decideChannels(cat.train.ids, (id) => (src.head ? src.head(id, HEAD_BYTES) : src.read(id)), (id) => src.read(id));
  cfg.data.channels = d.channels;
  return d;
}

/** Bytes of an image file read to tell grey from colour: JPEG's frame header may follow 64 KiB of EXIF. */
const HEAD_BYTES = 128 * 1024;

/** How a dataset is loaded. */
export interface LoadOptions {
  /**
   * Check the training images' stamps (data.verify: files) on a worker thread
   * while the run starts, instead of before returning: only for a run whose
   * start reads no training pixels (no data.normalize=dataset, no cluster:K, no
   * split or overlap check against recorded hashes). The caller must await
   * `Dataset.trainVerified()` before reading any training image.
   */
  deferTrainStamps?: boolean;
}
