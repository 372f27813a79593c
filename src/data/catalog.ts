import * as path from 'node:path';
import { Config } from '../config/schema';
import { filterClasses } from '../hierarchy/transform';
import { Hierarchy } from '../hierarchy/tree';
import { UsageError } from '../util/errors';
import { decodeCached, toUnitFloats } from './cache';
import { ImageRef } from './decode';
import { relabel } from './relabel';
import { Dataset, Examples } from './types';

/**
 * What every file-based format produces before any pixel is decoded: the
 * hierarchy and the images of each part, labelled by class index. Filtering,
 * relabelling, decoding, caching and bad-image handling are shared below.
 */
export interface Catalog {
  format: string;
  hierarchy: Hierarchy;
  train: ImageRef[];
  test: ImageRef[];
}

export type Log = (line: string) => void;
export const stderrLog: Log = (line) => process.stderr.write(`granular: ${line}\n`);

/** "a, b, c and 7 more" */
export function listSome(items: readonly string[], n = 5): string {
  return items.slice(0, n).join(', ') + (items.length > n ? ` and ${items.length - n} more` : '');
}

function remap(refs: ImageRef[], map: (cls: number, ref: ImageRef, i: number) => number): ImageRef[] {
  const out: ImageRef[] = [];
  refs.forEach((r, i) => {
    const c = map(r.cls, r, i);
    if (c >= 0) out.push({ ...r, cls: c });
  });
  return out;
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
    const r = relabel(hierarchy, cfg, [train, test].map((refs) => Int32Array.from(refs, (x) => x.cls)));
    hierarchy = r.hierarchy;
    train = remap(train, (_c, _r, i) => r.labels[0][i]);
    test = remap(test, (_c, _r, i) => r.labels[1][i]);
  }
  return { format: cat.format, hierarchy, train, test };
}

function emptyClasses(h: Hierarchy, refs: readonly ImageRef[], labels?: Int32Array): string[] {
  const count = new Int32Array(h.classes.length);
  if (labels) for (const y of labels) count[y]++;
  else for (const r of refs) count[r.cls]++;
  return h.classes.filter((_, i) => count[i] === 0).map((c) => h.path(c));
}

/** Filter, decode (through the cache), drop bad images, and check that no class is left empty. */
export async function materialize(cat0: Catalog, cfg: Config, log: Log = stderrLog): Promise<Dataset> {
  const cat = transformCatalog(cat0, cfg);
  const h = cat.hierarchy;
  const empty = emptyClasses(h, cat.train);
  if (empty.length) {
    throw new UsageError(`${empty.length} class(es) have no training images: ${listSome(empty)}. Add images, or leave them out with data.exclude.`);
  }
  const size = cfg.data.image_size;
  const C = cfg.data.channels;
  const per = size * size * C;
  const refs = [...cat.train, ...cat.test];
  const cacheDir = cfg.data.cache_dir === null ? null : path.resolve(cfg.data.cache_dir);
  const dec = await decodeCached(cat.format, refs, size, C, cacheDir);
  if (dec.bad.length) {
    const first = dec.bad.slice(0, 3).map((b) => `${refs[b.index].id} (${b.reason})`);
    const msg = `${dec.bad.length} image(s) could not be decoded: ${first.join(', ')}${dec.bad.length > 3 ? ', ...' : ''}`;
    if (cfg.data.on_bad_image === 'fail') throw new UsageError(`${msg}. Fix or remove them, or set data.on_bad_image=skip.`);
    log(`warning: skipped ${msg}`);
  }
  const badSet = new Set(dec.bad.map((b) => b.index));
  const part = (from: number, list: ImageRef[]): Examples => {
    const keep: number[] = [];
    for (let i = 0; i < list.length; i++) if (!badSet.has(from + i)) keep.push(from + i);
    return {
      x: toUnitFloats(dec.pixels, keep, per),
      y: Int32Array.from(keep, (i) => refs[i].cls),
      ids: keep.map((i) => refs[i].id),
      hashes: keep.map((i) => dec.hashes[i]),
    };
  };
  const train = part(0, cat.train);
  const test = part(cat.train.length, cat.test);
  const emptyAfter = emptyClasses(h, [], train.y);
  if (emptyAfter.length) {
    throw new UsageError(`${emptyAfter.length} class(es) have no readable training images left: ${listSome(emptyAfter)}. Fix the images, or leave the classes out with data.exclude.`);
  }
  if (test.y.length === 0) throw new UsageError(`the ${cat.format} data has no test images. Add a test/ folder, or set data.test_fraction.`);
  return { hierarchy: h, shape: [size, size, C], train, test, skipped: dec.bad.length };
}
