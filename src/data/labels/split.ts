import { createHash } from 'node:crypto';
import { Config } from '../../config/schema';
import { Level } from '../../hierarchy/tree';
import { UsageError } from '../../util/errors';
import { Rng } from '../../util/rng';
import { Dataset, Examples, hashHex } from '../types';

/** Indices into a dataset's train and test examples for one run. */
export interface Split {
  train: number[];
  val: number[];
  test: number[];
}

/**
 * Order examples so that any prefix is stratified: rank within class first
 * (by a seeded permutation), then permutation position. Taking the first n of
 * this order gives nested subsets: a smaller one lies inside a larger one.
 */
export function stratifiedOrder(labels: Int32Array, rng: Rng): number[] {
  const perm = Array.from(labels, (_, i) => i);
  rng.shuffle(perm);
  const seen = new Map<number, number>();
  const rank = new Int32Array(labels.length);
  const pos = new Int32Array(labels.length);
  perm.forEach((idx, p) => {
    const c = labels[idx];
    const r = seen.get(c) ?? 0;
    seen.set(c, r + 1);
    rank[idx] = r;
    pos[idx] = p;
  });
  return perm.slice().sort((a, b) => rank[a] - rank[b] || pos[a] - pos[b]);
}

/**
 * Validation is taken from the front of the stratified order (so it does not
 * move when data.train_size changes); training subsets come from the rest.
 */
export function makeSplit(ds: { train: { y: Int32Array }; test: { y: Int32Array } }, cfg: Config): Split {
  const seed = cfg.data.seed;
  const order = stratifiedOrder(ds.train.y, new Rng(seed, 401));
  const nVal = Math.round(cfg.data.val_fraction * order.length);
  const val = order.slice(0, nVal);
  // Re-rank what is left within each class, so that a prefix of the pool is
  // stratified on its own even when the hold-out took uneven rounds per class.
  const rest = order.slice(nVal);
  const within = new Map<number, number>();
  // Per example index (typed arrays: half a million Map entries would cost more than the images' labels).
  const rank = new Int32Array(ds.train.y.length);
  const pos = new Int32Array(ds.train.y.length);
  rest.forEach((i, p) => {
    const c = ds.train.y[i];
    const r = within.get(c) ?? 0;
    within.set(c, r + 1);
    rank[i] = r;
    pos[i] = p;
  });
  let pool = rest.slice().sort((a, b) => rank[a] - rank[b] || pos[a] - pos[b]);
  if (cfg.data.train_per_class !== null) {
    const k = cfg.data.train_per_class;
    const count = new Map<number, number>();
    pool = pool.filter((i) => {
      const c = ds.train.y[i];
      const n = count.get(c) ?? 0;
      count.set(c, n + 1);
      return n < k;
    });
  }
  if (cfg.data.train_size !== null) {
    if (cfg.data.train_size > pool.length) {
      throw new UsageError(`data.train_size is ${cfg.data.train_size} but only ${pool.length} training examples remain after the validation hold-out and caps.`);
    }
    pool = pool.slice(0, cfg.data.train_size);
  }
  let test = stratifiedOrder(ds.test.y, new Rng(seed, 402));
  if (cfg.data.test_size !== null) test = test.slice(0, cfg.data.test_size);
  if (pool.length === 0) throw new UsageError('no training examples are left after the validation hold-out and caps: lower data.val_fraction or raise data.train_size.');
  const asc = (a: number, b: number) => a - b;
  return { train: pool.sort(asc), val: val.sort(asc), test: test.sort(asc) };
}

/** What split.json holds that readers use: ids per part and, for image data, each image's content hash. */
export interface SplitRecord {
  train: string[];
  val: string[];
  test: string[];
  /** Content hash of each image (hex), parallel to the ids (file-based formats; runs made before they were recorded lack them). */
  hashes?: { train?: string[]; val?: string[]; test?: string[] };
}

/**
 * split.json: example ids per part, a hash of ids and labels, the content
 * hashes of the images (file-based formats: what `splitFromRecord` checks a
 * later read against, and the source's training set that a fine-tuning test
 * set is checked against without loading this dataset again) and the input
 * normalisation.
 */
export function splitRecord(ds: Dataset, split: Split): Record<string, unknown> {
  const ids = (e: Examples, idx: number[]) => idx.map((i) => e.ids[i]);
  const rec: Record<string, unknown> = { train: ids(ds.train, split.train), val: ids(ds.train, split.val), test: ids(ds.test, split.test) };
  if (ds.train.hashes && ds.test.hashes) {
    const hex = (e: Examples, idx: number[]) => idx.map((i) => hashHex(e.hashes!, i));
    rec.hashes = { train: hex(ds.train, split.train), val: hex(ds.train, split.val), test: hex(ds.test, split.test) };
  }
  if (ds.train.x.norm) rec.normalize = ds.train.x.norm;
  const h = createHash('sha256');
  for (const [part, e, idx] of [['train', ds.train, split.train], ['val', ds.train, split.val], ['test', ds.test, split.test]] as const) {
    h.update(part);
    for (const i of idx) h.update(`${e.ids[i]}:${e.y[i]}\n`);
  }
  const out: Record<string, unknown> = { ...rec, counts: { train: split.train.length, val: split.val.length, test: split.test.length }, hash: h.digest('hex') };
  if (ds.sourceOverlap) out.source_overlap = ds.sourceOverlap;
  if (ds.duplicates) out.duplicates = ds.duplicates;
  if (ds.channels) out.channels = ds.channels;
  return out;
}

/**
 * Rebuild a split from a split.json written by a run (its own, for eval and
 * --resume, or the source's when fine-tuning on the same data). Where the
 * record has content hashes, every image must still have the content the run
 * recorded: the same names with other pictures (another folder of the same
 * layout, files replaced since) are a UsageError naming them, never read silently.
 */
export function splitFromRecord(ds: Dataset, rec: SplitRecord, where: string, log: (line: string) => void = (l) => process.stderr.write(`granular: ${l}\n`)): Split {
  const changed: string[] = [];
  const droppedDuplicates: string[] = [];
  const lookup = (e: Examples, part: 'train' | 'val' | 'test') => {
    const index = new Map(e.ids.map((id, i) => [id, i]));
    const hashes = rec.hashes?.[part];
    const out: number[] = [];
    rec[part].forEach((id, k) => {
      // Ids are NFC (runs made before names were normalized may hold NFD ones).
      const i = index.get(id.normalize('NFC'));
      const dropped = i === undefined && part === 'test' ? ds.duplicateTestIds?.get(id.normalize('NFC')) : undefined;
      if (dropped !== undefined) {
        // Recorded before data.duplicates existed: a test image that repeats a training image no longer scores,
        // but one whose content changed since is still a changed image (refused below).
        if (hashes?.length === rec[part].length && hashes[k] !== dropped) changed.push(id);
        else droppedDuplicates.push(id);
        return;
      }
      if (i === undefined) throw new UsageError(`${where}: example '${id}' of its ${part} split is not in this dataset. Fine-tune on the same data, or set data.* so a new split is made.`);
      if (hashes?.length === rec[part].length && e.hashes && hashes[k] !== hashHex(e.hashes, i)) changed.push(id);
      out.push(i);
    });
    return out;
  };
  const split = { train: lookup(ds.train, 'train'), val: lookup(ds.train, 'val'), test: lookup(ds.test, 'test') };
  if (droppedDuplicates.length) {
    log(`${where}: ${droppedDuplicates.length} of the ${rec.test.length} test images its split.json names are the dataset's own duplicates, which data.duplicates=drop_test leaves out: ${droppedDuplicates.slice(0, 3).join(', ')}${droppedDuplicates.length > 3 ? ', ...' : ''}`);
  }
  if (changed.length) {
    const n = rec.train.length + rec.val.length + rec.test.length;
    throw new UsageError(
      `${where}: ${changed.length} of its ${n} images have other content than when the run recorded them (split.json content hashes): ` +
        `${changed.slice(0, 5).join(', ')}${changed.length > 5 ? `, and ${changed.length - 5} more` : ''}. ` +
        `The data folder holds other pictures under the same names: point data.root at the run's own images.`,
    );
  }
  return split;
}

/**
 * Labels at `level` for the training set, with `fraction` of them flipped to a
 * different class. Which examples flip and to what is drawn from data.seed and
 * the example ids alone, so every run on the same data shares the same noise.
 */
export function noisyLabels(ids: string[], labels: Int32Array, numClasses: number, fraction: number, seed: number): { labels: Int32Array; flipped: number } {
  const out = Int32Array.from(labels);
  if (fraction <= 0 || numClasses < 2) return { labels: out, flipped: 0 };
  let flipped = 0;
  for (let i = 0; i < ids.length; i++) {
    const h = createHash('sha256').update(`${seed}:${ids[i]}`).digest();
    const u = h.readUInt32LE(0) / 4294967296;
    if (u >= fraction) continue;
    // An offset in [1, K-1] can never land on the true class.
    const offset = 1 + (h.readUInt32LE(4) % (numClasses - 1));
    out[i] = (labels[i] + offset) % numClasses;
    flipped++;
  }
  return { labels: out, flipped };
}

/** Class indices at `level` of the examples `idx` of `e`, in that order (-1 where the level drops the class). */
export function levelLabels(e: Examples, idx: readonly number[], level: Level): Int32Array {
  return Int32Array.from(idx, (i) => level.classOf[e.y[i]]);
}

/**
 * A level that drops classes (`nodes:FILE`: classes under no listed node)
 * drops their examples from every part of the split; returns how many went.
 */
export function restrictToLevel(ds: Dataset, split: Split, level: Level): { split: Split; dropped: number } {
  if (level.droppedClasses === 0) return { split, dropped: 0 };
  const keep = (e: Examples) => (i: number) => level.classOf[e.y[i]] >= 0;
  const out = { train: split.train.filter(keep(ds.train)), val: split.val.filter(keep(ds.train)), test: split.test.filter(keep(ds.test)) };
  const dropped = split.train.length + split.val.length + split.test.length - out.train.length - out.val.length - out.test.length;
  if (out.train.length === 0 || out.test.length === 0) {
    throw new UsageError(`level '${level.spec}' keeps no ${out.train.length === 0 ? 'training' : 'test'} images: no class falls under a listed node.`);
  }
  return { split: out, dropped };
}
