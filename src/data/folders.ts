import * as fs from 'node:fs';
import * as path from 'node:path';
import { Config } from '../config/schema';
import { UsageError } from '../util/errors';
import { Rng } from '../util/rng';
import { Refs, refsOf } from './catalog';

export const IMAGE_EXT = /\.(png|jpe?g|ppm|pgm|pbm|pnm|webp|tiff?|gif)$/i;

export interface FileInfo {
  /** Path relative to the dataset root: the example id. */
  id: string;
  abs: string;
}

/**
 * Image files directly inside `dir` (sorted). Regular files are known from the
 * listing itself; only links are statted (to follow them): stamps are taken
 * later, by the record cache, and only where data.verify asks for them.
 */
export function listImages(root: string, rel: string): FileInfo[] {
  const dir = path.join(root, rel);
  const out: FileInfo[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.') || !IMAGE_EXT.test(e.name)) continue;
    const abs = path.join(dir, e.name);
    if (!e.isFile()) {
      // A link (followed) or an entry of unknown type; a dangling link is not an image.
      const st = fs.statSync(abs, { throwIfNoEntry: false });
      if (!st?.isFile()) continue;
    }
    out.push({ id: `${rel}/${e.name}`, abs });
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

/**
 * The class folders of `m` as catalogue columns (folder -> class index by
 * `classOf`), with the files whose path on disk is not root/id.
 */
export function folderRefs(root: string, m: Map<string, FileInfo[]>, classOf: (folder: string) => number): { refs: Refs; onDisk: Map<string, string> } {
  const onDisk = new Map<string, string>();
  const refs = refsOf(
    (function* () {
      for (const [folder, files] of m) {
        const cls = classOf(folder);
        for (const f of files) {
          if (f.abs !== path.join(root, f.id)) onDisk.set(f.id, f.abs);
          yield { id: f.id, cls };
        }
      }
    })(),
  );
  return { refs, onDisk };
}

/** Resolve a dataset path: absolute, or relative to the working folder. */
export function requireRoot(cfg: Config): string {
  if (!cfg.data.root) throw new UsageError(`data.format=${cfg.data.format} needs data.root (the dataset folder). Set it in the config or with --set data.root=PATH.`);
  return path.resolve(cfg.data.root);
}
