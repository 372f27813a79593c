import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { UsageError } from '../../util/errors';
import { Rng } from '../../util/rng';
import { readIdx } from './idx';

/** Where Debian's dataset-fashion-mnist package installs the four IDX files. */
export const FASHION_MNIST_SYSTEM = '/usr/share/datasets/fashion-mnist';

/**
 * The ten Fashion-MNIST items (label index = position; Xiao et al. 2017) as
 * folder names, and the hierarchy granular studies use:
 *
 *   group (2)   kind (5)   item (10)
 *   clothing    top        tshirt_top, shirt          light upper-body garments
 *               warm       pullover, coat             warm upper-body garments
 *               long       trouser, dress             garments that cover the legs
 *   accessory   footwear   sandal, sneaker, ankle_boot
 *               bag        bag
 *
 * Why this tree: every level groups items by what the garment is for (a
 * retailer's apparel / accessories split at the top, garment function below),
 * never by how the images look, so the hierarchy is meaningful in Hong et
 * al.'s sense without being read off the data. The top split is 6 items
 * against 4 (a worn / carried split would put bag alone against nine). Kinds
 * keep Fashion-MNIST's hard confusions partly inside one kind (T-shirt vs
 * shirt, pullover vs coat) and partly across kinds (shirt vs pullover/coat):
 * fine labels carry information the kind level does not.
 */
export const FASHION_MNIST_ITEMS = ['tshirt_top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankle_boot'] as const;

export const FASHION_MNIST_TREE: Record<(typeof FASHION_MNIST_ITEMS)[number], [group: string, kind: string]> = {
  tshirt_top: ['clothing', 'top'],
  shirt: ['clothing', 'top'],
  pullover: ['clothing', 'warm'],
  coat: ['clothing', 'warm'],
  trouser: ['clothing', 'long'],
  dress: ['clothing', 'long'],
  sandal: ['accessory', 'footwear'],
  sneaker: ['accessory', 'footwear'],
  ankle_boot: ['accessory', 'footwear'],
  bag: ['accessory', 'bag'],
};

/** taxonomy.csv for the tree above: header `group,kind,item`, one row per item. */
export function fashionMnistTaxonomy(): string {
  const rows = FASHION_MNIST_ITEMS.map((item) => [...FASHION_MNIST_TREE[item], item].join(','));
  return ['group,kind,item', ...rows].join('\n') + '\n';
}

export interface FashionMnistOptions {
  /** Folder holding train-images-idx3-ubyte.gz etc. */
  source: string;
  /** Output imagefolder. */
  out: string;
  /** Images kept per item in each part; null = all (6,000 train, 1,000 test). */
  trainPerClass: number | null;
  testPerClass: number | null;
  /** Seeds which images a cap keeps; smaller caps are nested in larger ones. */
  seed: number;
  log?: (line: string) => void;
}

/**
 * Indices kept per class: a seeded permutation of each class's images, cut at
 * `cap` (so the subset for a smaller cap is inside the one for a larger cap),
 * then back in file order. Throws when a class has fewer images than asked.
 */
export function subsetPerClass(labels: Uint8Array, numClasses: number, cap: number | null, seed: number, part: string): number[] {
  const byClass: number[][] = Array.from({ length: numClasses }, () => []);
  labels.forEach((y, i) => {
    if (y >= numClasses) throw new UsageError(`${part}: label ${y} at image ${i} is outside 0..${numClasses - 1}.`);
    byClass[y].push(i);
  });
  const kept: number[] = [];
  byClass.forEach((idx, k) => {
    if (cap !== null && idx.length < cap) throw new UsageError(`${part}: class ${FASHION_MNIST_ITEMS[k] ?? k} has ${idx.length} images, fewer than the ${cap} asked for. Lower the cap.`);
    const order = idx.slice();
    new Rng(seed, 1009 + k).shuffle(order);
    kept.push(...(cap === null ? order : order.slice(0, cap)));
  });
  return kept.sort((a, b) => a - b);
}

/**
 * Convert the IDX files into an imagefolder (`OUT/train/<item>/<index>.png`,
 * `OUT/test/<item>/...`, `OUT/taxonomy.csv`, `OUT/README.txt`), grayscale PNGs
 * of 28 x 28 with the original pixel values. Written into `OUT.tmp-<pid>` and
 * renamed, so a half-written folder never looks finished; an existing OUT is
 * refused. Returns the image counts per part.
 */
export async function makeFashionMnist(o: FashionMnistOptions): Promise<{ train: number; test: number }> {
  const log = o.log ?? (() => {});
  if (fs.existsSync(o.out)) throw new UsageError(`'${o.out}' already exists; remove it or give another --out.`);
  const files = {
    train: ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'],
    test: ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'],
  } as const;
  for (const f of [...files.train, ...files.test]) {
    if (!fs.existsSync(path.join(o.source, f))) {
      throw new UsageError(`'${path.join(o.source, f)}' not found. Install Debian's dataset-fashion-mnist package (it puts the files in ${FASHION_MNIST_SYSTEM}) or give --source.`);
    }
  }
  const tmp = `${o.out}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  const counts = { train: 0, test: 0 };
  try {
    for (const part of ['train', 'test'] as const) {
      const [imgFile, labFile] = files[part].map((f) => path.join(o.source, f));
      const images = readIdx(imgFile);
      const labels = readIdx(labFile);
      if (images.dims.length !== 3 || labels.dims.length !== 1 || images.dims[0] !== labels.dims[0]) {
        throw new UsageError(`${imgFile} [${images.dims}] and ${labFile} [${labels.dims}] do not pair up as N images of H x W with N labels.`);
      }
      const [, h, w] = images.dims;
      const keep = subsetPerClass(labels.data, FASHION_MNIST_ITEMS.length, part === 'train' ? o.trainPerClass : o.testPerClass, o.seed, labFile);
      for (const item of FASHION_MNIST_ITEMS) fs.mkdirSync(path.join(tmp, part, item), { recursive: true });
      for (const i of keep) {
        const px = images.data.subarray(i * h * w, (i + 1) * h * w);
        const file = path.join(tmp, part, FASHION_MNIST_ITEMS[labels.data[i]], `${String(i).padStart(5, '0')}.png`);
        await sharp(Buffer.from(px), { raw: { width: w, height: h, channels: 1 } }).toColourspace('b-w').png().toFile(file);
      }
      counts[part] = keep.length;
      log(`${part}: ${keep.length} images`);
    }
    fs.writeFileSync(path.join(tmp, 'taxonomy.csv'), fashionMnistTaxonomy());
    fs.writeFileSync(
      path.join(tmp, 'README.txt'),
      `Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence) as an imagefolder for granular.\n` +
        `Made from ${o.source} with train_per_class=${o.trainPerClass ?? 'all'}, test_per_class=${o.testPerClass ?? 'all'}, seed=${o.seed}.\n` +
        `File names are the image's index in the original IDX file. taxonomy.csv: group,kind,item (see src/data/formats/fashion-mnist.ts).\n`,
    );
    fs.renameSync(tmp, o.out);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return counts;
}
