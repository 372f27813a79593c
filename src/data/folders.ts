import * as fs from 'node:fs';
import * as path from 'node:path';
import { Config } from '../config/schema';
import { UsageError } from '../util/errors';
import { Rng } from '../util/rng';
import { ImageRef } from './decode';

export const IMAGE_EXT = /\.(png|jpe?g|ppm|pgm|pbm|pnm|webp|tiff?|gif)$/i;

export interface FileInfo {
  /** Path relative to the dataset root: the example id. */
  id: string;
  abs: string;
  stamp: string;
}

/** Image files directly inside `dir` (sorted), each with its size and mtime stamp. */
export function listImages(root: string, rel: string): FileInfo[] {
  const dir = path.join(root, rel);
  const out: FileInfo[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.') || !IMAGE_EXT.test(e.name)) continue;
    const abs = path.join(dir, e.name);
    let st: fs.Stats;
    try {
      st = fs.statSync(abs);
    } catch {
      continue; // a dangling link: not an image
    }
    if (!st.isFile()) continue;
    out.push({ id: `${rel}/${e.name}`, abs, stamp: `${st.size}:${Math.round(st.mtimeMs)}` });
  }
  return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function subfolders(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort();
}

/** Class folder name -> its images, for the training and the test part. */
export interface ClassFolders {
  train: Map<string, FileInfo[]>;
  test: Map<string, FileInfo[]>;
  /** How the parts were found, for messages. */
  layout: string;
}

/**
 * `ROOT/train/<class>/…` and `ROOT/test/<class>/…` (`val/` is accepted for
 * test), or, with data.test_fraction, `ROOT/<class>/…` split per class by a
 * seeded draw.
 */
export function scanClassFolders(root: string, cfg: Config, skip: (name: string) => boolean = () => false): ClassFolders {
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw new UsageError(`data.root '${root}' is not a folder.`);
  const hasTrain = fs.existsSync(path.join(root, 'train'));
  const testName = ['test', 'val'].find((n) => fs.existsSync(path.join(root, n)));
  const scan = (rel: string) => new Map(subfolders(path.join(root, rel)).filter((n) => !skip(n)).map((n) => [n, listImages(root, rel ? `${rel}/${n}` : n)]));
  if (hasTrain) {
    if (cfg.data.test_fraction !== null) {
      throw new UsageError(`data.test_fraction is set but '${root}' already has a train/ folder (its test set comes from ${testName ?? 'test'}/). Remove data.test_fraction.`);
    }
    if (!testName) throw new UsageError(`'${root}' has a train/ folder but no test/ (or val/) folder. Add one, or put the class folders directly in the root and set data.test_fraction.`);
    return { train: scan('train'), test: scan(testName), layout: `train/ and ${testName}/` };
  }
  if (cfg.data.test_fraction === null) {
    throw new UsageError(`'${root}' has no train/ folder. Use ROOT/train/<class>/ and ROOT/test/<class>/, or set data.test_fraction (e.g. 0.2) to split ROOT/<class>/ into train and test.`);
  }
  const all = new Map(subfolders(root).filter((n) => !skip(n)).map((n) => [n, listImages(root, n)]));
  const rng = new Rng(cfg.data.seed, 403);
  const train = new Map<string, FileInfo[]>();
  const test = new Map<string, FileInfo[]>();
  for (const [name, files] of all) {
    const order = files.slice();
    rng.shuffle(order);
    // At least one training image per class whenever the class has any.
    const nTest = Math.min(Math.round(cfg.data.test_fraction * files.length), Math.max(0, files.length - 1));
    const inTest = new Set(order.slice(0, nTest).map((f) => f.id));
    train.set(name, files.filter((f) => !inTest.has(f.id)));
    test.set(name, files.filter((f) => inTest.has(f.id)));
  }
  return { train, test, layout: `ROOT/<class>/ split by data.test_fraction=${cfg.data.test_fraction}` };
}

export function fileRef(f: FileInfo, cls: number): ImageRef {
  return { id: f.id, cls, stamp: f.stamp, read: () => fs.promises.readFile(f.abs) };
}

/** Resolve a dataset path: absolute, or relative to the working folder. */
export function requireRoot(cfg: Config): string {
  if (!cfg.data.root) throw new UsageError(`data.format=${cfg.data.format} needs data.root (the dataset folder). Set it in the config or with --set data.root=PATH.`);
  return path.resolve(cfg.data.root);
}
