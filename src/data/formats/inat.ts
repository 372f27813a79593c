import * as path from 'node:path';
import { Config } from '../../config/schema';
import { taxonomyTree, TaxonRow } from '../../hierarchy/taxonomy';
import { joinNames } from '../../hierarchy/tree';
import { UsageError } from '../../util/errors';
import { Catalog, folderSource, listSome, Log, Refs, refsOf } from '../cache/catalog';
import { findOnDisk, nfc } from './folders';
import { ImageSource } from '../cache/records';
import { scanTopLevelArrays } from './jsonscan';

export const INAT_LEVELS = ['kingdom', 'phylum', 'class', 'order', 'family', 'genus', 'species'];
const RANKS = INAT_LEVELS.slice(0, -1);

interface Part {
  /** image id -> file name */
  files: Map<number, string>;
  annotations: Array<{ image: number; category: number }>;
  categories: Map<number, TaxonRow>;
}

function readPart(file: string, log: Log): Part {
  const part: Part = { files: new Map(), annotations: [], categories: new Map() };
  const t = process.hrtime.bigint();
  const { bytes } = scanTopLevelArrays(file, new Set(['images', 'annotations', 'categories']), (key, el) => {
    const o = el as Record<string, unknown>;
    // Keep only the fields we use: the rest of a record is garbage at once.
    // Names are compared in NFC; the file is found on disk whatever its normalization (findOnDisk).
    if (key === 'images') part.files.set(Number(o.id), nfc(String(o.file_name)));
    else if (key === 'annotations') part.annotations.push({ image: Number(o.image_id), category: Number(o.category_id) });
    else {
      const names = [...RANKS.map((r) => (o[r] === undefined || o[r] === null ? '' : String(o[r]))), String(o.name ?? '')].map(nfc);
      part.categories.set(Number(o.id), { names, key: String(o.id), where: `category id ${o.id}` });
    }
  });
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  log(`parsed ${path.basename(file)} (${(bytes / 1e6).toFixed(1)} MB: ${part.files.size} images, ${part.annotations.length} annotations, ${part.categories.size} categories) in ${s.toFixed(2)} s`);
  return part;
}

/**
 * iNaturalist 2021 (COCO-style train.json / val.json; every category carries
 * kingdom … genus and its name). Classes are the categories, identified by
 * their taxonomic path; image paths are relative to data.root.
 */
export function inatCatalog(cfg: Config, log: Log): Catalog {
  if (!cfg.data.root) throw new UsageError(`data.format=inat2021 needs data.root (the folder holding ${cfg.data.annotations.train} and the images).`);
  const root = path.resolve(cfg.data.root);
  const trainFile = path.resolve(root, cfg.data.annotations.train);
  const testFile = path.resolve(root, cfg.data.annotations.test);
  const train = readPart(trainFile, log);
  const test = readPart(testFile, log);
  // The categories of both files together; the same id must mean the same taxon.
  const rows = [...train.categories.values(), ...[...test.categories.values()].filter((r) => !train.categories.has(Number(r.key)))];
  const clash = [...test.categories.values()].filter((r) => train.categories.has(Number(r.key)) && joinNames(train.categories.get(Number(r.key))!.names) !== joinNames(r.names));
  if (clash.length) throw new UsageError(`${testFile}: ${clash.length} category id(s) name other taxa than in ${trainFile}: ${listSome(clash.map((r) => r.key))}.`);
  // Only categories with training images are classes; listed but unused ones are left out.
  const used = new Set(train.annotations.map((a) => String(a.category)));
  const known = new Set(rows.map((r) => r.key));
  const { hierarchy: full, classOfKey } = taxonomyTree(INAT_LEVELS, rows.filter((r) => used.has(r.key)), `${trainFile} categories`);
  const index = new Map(full.classes.map((c, i) => [c, i]));
  const listings = new Map<string, Map<string, string>>();
  // Files whose name on disk differs from the JSON's (NFD on disk, NFC in the JSON): read by their on-disk path.
  const onDisk = new Map<string, string>();
  const refsFor = (part: Part, file: string): Refs => {
    const unknownCat = part.annotations.filter((a) => !known.has(String(a.category)));
    if (unknownCat.length) throw new UsageError(`${file}: ${unknownCat.length} annotation(s) name an unknown category: ${listSome(unknownCat.map((a) => `image ${a.image} -> category ${a.category}`))}.`);
    const untrained = part.annotations.filter((a) => !classOfKey.has(String(a.category)));
    if (untrained.length) throw new UsageError(`${file}: ${untrained.length} image(s) belong to categories without training images: ${listSome(untrained.map((a) => `${part.files.get(a.image) ?? a.image} (category ${a.category})`))}.`);
    const unknownImg = part.annotations.filter((a) => !part.files.has(a.image));
    if (unknownImg.length) throw new UsageError(`${file}: ${unknownImg.length} annotation(s) point at an image id not in 'images': ${listSome(unknownImg.map((a) => String(a.image)))}.`);
    // A file missing outright is named by the record cache when it stamps it (source.missing says so).
    const items = part.annotations.map((a) => {
      const id = part.files.get(a.image)!;
      const found = findOnDisk(root, id, listings);
      if (found && found.abs !== path.resolve(root, id)) onDisk.set(id, found.abs);
      return { id, cls: index.get(classOfKey.get(String(a.category))!)! };
    });
    return refsOf(items.sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0)));
  };
  const trainRefs = refsFor(train, trainFile);
  const testRefs = refsFor(test, testFile);
  const source: ImageSource = {
    ...folderSource('inat2021', root, onDisk),
    missing: (ids) => `${ids.length} annotated image(s) are missing under '${root}' (listed in ${path.basename(trainFile)} or ${path.basename(testFile)}): ${listSome(ids)}. Restore them, or remove their annotations.`,
  };
  return { format: 'inat2021', hierarchy: full, source, train: trainRefs, test: testRefs };
}
