/**
 * CIFAR-10 and CIFAR-100 in their published binary version (Krizhevsky 2009,
 * "Learning Multiple Layers of Features from Tiny Images";
 * https://www.cs.toronto.edu/~kriz/cifar.html, "Binary version"):
 *
 *   cifar-10-batches-bin/   data_batch_1.bin ... data_batch_5.bin, test_batch.bin, batches.meta.txt
 *     record: <1 label byte><3,072 pixel bytes>
 *   cifar-100-binary/       train.bin, test.bin, coarse_label_names.txt, fine_label_names.txt
 *     record: <1 coarse label byte><1 fine label byte><3,072 pixel bytes>
 *
 * The 3,072 pixel bytes are a 32 x 32 image as three planes, red then green
 * then blue, each row-major. The name files list one class name per line, in
 * label order. CIFAR-100's two-level hierarchy (20 superclasses of 5 classes
 * each) comes from the coarse and fine label bytes; CIFAR-10 is one level.
 *
 * Example ids are `<file>/<record index>` (e.g. `data_batch_3.bin/00042`).
 * The pixels reach the decoder as a binary PPM, so resizing, the record cache
 * and content hashes (the dataset's own duplicates: CIFAR-100 holds a few)
 * work as for image files.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Config } from '../../config/schema';
import { Hierarchy, joinNames } from '../../hierarchy/tree';
import { UsageError } from '../../util/errors';
import { Catalog, Refs } from '../cache/catalog';
import { requireRoot } from './folders';
import { ImageSource } from '../cache/records';

const SIDE = 32;
const PIXELS = SIDE * SIDE * 3;

interface Layout {
  kind: 'cifar10' | 'cifar100';
  dir: string;
  train: string[];
  test: string[];
  /** Label bytes before the pixels. */
  labelBytes: 1 | 2;
}

/** The CIFAR folder at `root`, or inside it (the archives unpack to cifar-10-batches-bin/ or cifar-100-binary/). */
function findLayout(root: string): Layout {
  const has = (dir: string, f: string) => fs.existsSync(path.join(dir, f));
  const candidates = [root, path.join(root, 'cifar-10-batches-bin'), path.join(root, 'cifar-100-binary')];
  for (const dir of candidates) {
    if (has(dir, 'test_batch.bin')) {
      const train = fs.readdirSync(dir).filter((f) => /^data_batch_\d+\.bin$/.test(f)).sort((a, b) => Number(a.match(/\d+/)![0]) - Number(b.match(/\d+/)![0]));
      if (!train.length) throw new UsageError(`'${dir}' has test_batch.bin but no data_batch_N.bin: the CIFAR-10 training batches are missing. Unpack the whole cifar-10-binary archive there.`);
      return { kind: 'cifar10', dir, train, test: ['test_batch.bin'], labelBytes: 1 };
    }
    if (has(dir, 'train.bin') && has(dir, 'test.bin')) return { kind: 'cifar100', dir, train: ['train.bin'], test: ['test.bin'], labelBytes: 2 };
  }
  throw new UsageError(
    `data.format=cifar: no CIFAR binary files in '${root}'. Point data.root at the unpacked binary version: cifar-10-batches-bin/ ` +
      `(data_batch_1.bin ... data_batch_5.bin, test_batch.bin, batches.meta.txt) or cifar-100-binary/ (train.bin, test.bin, coarse_label_names.txt, fine_label_names.txt).`,
  );
}

/** Class names, one per line in label order (blank lines and trailing spaces ignored). */
function readNames(file: string, what: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new UsageError(`data.format=cifar: cannot read '${file}', which names the ${what} (one per line, in label order; it comes with the archive). Restore it.`);
  }
  const names = text.split(/\r?\n/).map((l) => l.trim().normalize('NFC')).filter((l) => l !== '');
  const seen = new Set<string>();
  for (const n of names) {
    if (seen.has(n)) throw new UsageError(`'${file}' names '${n}' twice; each ${what.replace(/s$/, '')} needs its own name.`);
    seen.add(n);
  }
  if (!names.length) throw new UsageError(`'${file}' names no ${what}.`);
  return names;
}

/** The label bytes of every record of `file`: read in large chunks, pixels skipped. */
function readLabels(file: string, labelBytes: number): Uint8Array[] {
  const record = labelBytes + PIXELS;
  const size = fs.statSync(file).size;
  if (size === 0 || size % record !== 0) {
    throw new UsageError(`'${file}' is ${size} bytes, not a whole number of ${record}-byte CIFAR records (${labelBytes} label byte(s) + ${PIXELS} pixel bytes): it is cut off or not this CIFAR version.`);
  }
  const n = size / record;
  const out = Array.from({ length: labelBytes }, () => new Uint8Array(n));
  const per = 4096;
  const buf = Buffer.allocUnsafe(per * record);
  const fd = fs.openSync(file, 'r');
  try {
    for (let i = 0; i < n; i += per) {
      const k = Math.min(per, n - i);
      fs.readSync(fd, buf, 0, k * record, i * record);
      for (let j = 0; j < k; j++) for (let b = 0; b < labelBytes; b++) out[b][i + j] = buf[j * record + b];
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

/** Where the CIFAR data of a config lives, and its record layout. */
export function cifarCatalog(cfg: Config): Catalog {
  const root = requireRoot(cfg);
  const L = findLayout(root);
  const record = L.labelBytes + PIXELS;
  let hierarchy: Hierarchy;
  // label byte(s) of a record -> class index
  let classOf: (labels: Uint8Array[], i: number, file: string) => number;
  if (L.kind === 'cifar10') {
    const names = readNames(path.join(L.dir, 'batches.meta.txt'), 'classes');
    const classes = names.map((n) => joinNames([n]));
    hierarchy = new Hierarchy('root', names.map((n) => ({ id: joinNames([n]), parent: null, name: n })), classes, new Map([[1, 'class']]));
    classOf = (labels, i, file) => {
      const c = labels[0][i];
      if (c >= names.length) throw new UsageError(`record ${i} of '${file}' has label ${c}, but batches.meta.txt names ${names.length} classes.`);
      return c;
    };
  } else {
    const coarse = readNames(path.join(L.dir, 'coarse_label_names.txt'), 'superclasses');
    const fine = readNames(path.join(L.dir, 'fine_label_names.txt'), 'classes');
    // Each fine class lies under the superclass its training records give it (one, as published).
    const parent = new Int16Array(fine.length).fill(-1);
    for (const f of L.train) {
      const file = path.join(L.dir, f);
      const [c, k] = readLabels(file, 2);
      for (let i = 0; i < k.length; i++) {
        if (c[i] >= coarse.length || k[i] >= fine.length) throw new UsageError(`record ${i} of '${file}' has labels ${c[i]}/${k[i]}, but the name files list ${coarse.length} superclasses and ${fine.length} classes.`);
        if (parent[k[i]] >= 0 && parent[k[i]] !== c[i]) {
          throw new UsageError(`'${file}': class '${fine[k[i]]}' appears under two superclasses ('${coarse[parent[k[i]]]}' and '${coarse[c[i]]}', record ${i}); CIFAR-100's classes each have one.`);
        }
        parent[k[i]] = c[i];
      }
    }
    const missing = fine.filter((_, k) => parent[k] < 0);
    if (missing.length) throw new UsageError(`${missing.length} CIFAR-100 class(es) have no training record: ${missing.slice(0, 5).join(', ')}. The training file is incomplete.`);
    const nodes = [
      ...coarse.map((n) => ({ id: joinNames([n]), parent: null, name: n })),
      ...fine.map((n, k) => ({ id: joinNames([coarse[parent[k]], n]), parent: joinNames([coarse[parent[k]]]), name: n })),
    ];
    const classes = fine.map((n, k) => joinNames([coarse[parent[k]], n]));
    hierarchy = new Hierarchy('root', nodes, classes, new Map([[1, 'superclass'], [2, 'class']]));
    classOf = (labels, i, file) => {
      const k = labels[1][i];
      if (k >= fine.length || parent[k] !== labels[0][i]) throw new UsageError(`record ${i} of '${file}' has labels ${labels[0][i]}/${k}, which do not match the training records' superclass of that class.`);
      return k;
    };
  }
  const refs = (files: string[]): Refs => {
    const ids: string[] = [];
    const cls: number[] = [];
    for (const f of files) {
      const file = path.join(L.dir, f);
      const labels = readLabels(file, L.labelBytes);
      for (let i = 0; i < labels[0].length; i++) {
        ids.push(`${f}/${String(i).padStart(5, '0')}`);
        cls.push(classOf(labels, i, file));
      }
    }
    return { ids, cls: Int32Array.from(cls) };
  };
  const train = refs(L.train);
  const test = refs(L.test);
  return { format: 'cifar', hierarchy, source: cifarSource(L.dir, record), train, test };
}

/** Records of the CIFAR files in `dir` as binary PPM images; a file's size and time stamp all its images. */
function cifarSource(dir: string, record: number): ImageSource {
  const fds = new Map<string, number>();
  const stats = new Map<string, [number, number] | null>();
  const split = (id: string) => {
    const slash = id.lastIndexOf('/');
    return { file: path.join(dir, id.slice(0, slash)), index: Number(id.slice(slash + 1)) };
  };
  const header = Buffer.from(`P6\n${SIDE} ${SIDE}\n255\n`, 'latin1');
  return {
    identity: `cifar:${dir}`,
    read: (id) => {
      const { file, index } = split(id);
      let fd = fds.get(file);
      if (fd === undefined) {
        fd = fs.openSync(file, 'r');
        fds.set(file, fd);
      }
      const buf = Buffer.allocUnsafe(record);
      if (fs.readSync(fd, buf, 0, record, index * record) !== record) throw new Error(`record ${index} of ${file} is cut off`);
      const planes = buf.subarray(record - PIXELS);
      const out = Buffer.allocUnsafe(header.length + PIXELS);
      header.copy(out);
      const n = SIDE * SIDE;
      for (let p = 0; p < n; p++) {
        out[header.length + 3 * p] = planes[p];
        out[header.length + 3 * p + 1] = planes[n + p];
        out[header.length + 3 * p + 2] = planes[2 * n + p];
      }
      return out;
    },
    stamp: (id) => {
      const { file } = split(id);
      if (!stats.has(file)) {
        const st = fs.statSync(file, { throwIfNoEntry: false });
        stats.set(file, st ? [st.size, st.mtimeMs] : null);
      }
      return stats.get(file)!;
    },
    folder: () => null,
    colour: { channels: 3, reason: 'CIFAR images are RGB' },
  };
}
