import * as fs from 'node:fs';
import * as path from 'node:path';
import { Config } from '../../config/schema';
import { taxonomyTree } from '../../hierarchy/taxonomy';
import { UsageError } from '../../util/errors';
import { Catalog, folderSource, listSome } from '../cache/catalog';
import { parseCsv } from './csv';
import { folderRefs, nfc, requireRoot, scanClassFolders } from './folders';

/**
 * `ROOT/train/<leaf>/…`, `ROOT/test/<leaf>/…` (or ROOT/<leaf>/… with
 * data.test_fraction) and a taxonomy.csv whose header names the levels from
 * coarsest to finest; its last column holds the leaf folder names.
 */
export function imagefolderCatalog(cfg: Config): Catalog {
  const root = requireRoot(cfg);
  const taxFile = cfg.data.taxonomy ? path.resolve(cfg.data.taxonomy) : path.join(root, 'taxonomy.csv');
  let text: string;
  try {
    text = fs.readFileSync(taxFile, 'utf8');
  } catch {
    throw new UsageError(`cannot read the taxonomy '${taxFile}'. imagefolder needs a taxonomy.csv (header: level names coarsest to finest; last column: leaf folder names); set data.taxonomy if it lives elsewhere.`);
  }
  // Names are compared in NFC: folders written on macOS are often NFD, typed tables NFC.
  const rows = parseCsv(text, taxFile).map((r) => r.map(nfc));
  if (rows.length < 2) throw new UsageError(`${taxFile}: needs a header row and at least one class row.`);
  const levels = rows[0];
  if (levels.some((l) => l === '')) throw new UsageError(`${taxFile}: the header has an empty level name.`);
  const { hierarchy, classOfKey } = taxonomyTree(
    levels,
    rows.slice(1).map((r, i) => ({ names: r, key: r[r.length - 1], where: `line ${i + 2}` })),
    taxFile,
  );
  const folders = scanClassFolders(root, cfg);
  const unknown = [...new Set([...folders.train.keys(), ...folders.test.keys()])].filter((f) => !classOfKey.has(f));
  if (unknown.length) {
    throw new UsageError(`${unknown.length} leaf folder(s) in '${root}' are missing from ${taxFile}: ${listSome(unknown)}. Add a row for each, or remove the folders.`);
  }
  const noFolder = [...classOfKey.keys()].filter((k) => !folders.train.has(k));
  if (noFolder.length) {
    throw new UsageError(`${noFolder.length} taxonomy row(s) in ${taxFile} have no training folder (${folders.layout}): ${listSome(noFolder)}. Remove the rows, or add the folders.`);
  }
  const index = new Map(hierarchy.classes.map((c, i) => [c, i]));
  const classOf = (folder: string) => index.get(classOfKey.get(folder)!)!;
  const train = folderRefs(folders.train, classOf);
  const test = folderRefs(folders.test, classOf);
  const source = folderSource('imagefolder', root, new Map([...train.onDisk, ...test.onDisk]));
  return { format: 'imagefolder', hierarchy, source, train: train.refs, test: test.refs };
}
