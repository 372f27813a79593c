import * as fs from 'node:fs';
import * as path from 'node:path';
import { Config } from '../../config/schema';
import { Hierarchy, joinNames } from '../../hierarchy/tree';
import { UsageError } from '../../util/errors';
import { Catalog, refsOf } from '../cache/catalog';
import { ImageSource } from '../cache/records';
import { ZipEntry, ZipFile } from './zip';

/**
 * Where the project's copy lives: ../shared/data/omniglot beside the checkout
 * (found from this file, dist/src/data/formats/, not from the working folder, so a
 * run reads the same zips from any folder); data.root overrides it.
 */
export const OMNIGLOT_DEFAULT = path.resolve(__dirname, '..', '..', '..', '..', '..', 'shared', 'data', 'omniglot');
/** Drawers 01-15 train, 16-20 test: every character is in both parts, drawn by different people. */
export const OMNIGLOT_TRAIN_DRAWERS = 15;

const ENTRY = /^[^/]+\/([^/]+)\/(character\d+)\/([^/]+_(\d+)\.png)$/;

/**
 * The Omniglot background zips (alphabet -> character), read straight from
 * the archives. data.root is one zip, or a folder whose images_*.zip are all read.
 */
export function omniglotCatalog(cfg: Config): Catalog {
  const root = path.resolve(cfg.data.root ?? OMNIGLOT_DEFAULT);
  if (!fs.existsSync(root)) throw new UsageError(`Omniglot data not found at '${root}'. Set data.root to an images_background*.zip (or the folder holding it).`);
  const zips = fs.statSync(root).isDirectory()
    ? fs.readdirSync(root).filter((f) => /^images_.*\.zip$/.test(f)).sort().map((f) => path.join(root, f))
    : [root];
  if (zips.length === 0) throw new UsageError(`no images_*.zip in '${root}'. Set data.root to an Omniglot zip.`);
  const found: Array<{ alphabet: string; character: string; drawer: number; id: string }> = [];
  const entries = new Map<string, { zip: ZipFile; entry: ZipEntry }>();
  for (const file of zips) {
    const zip = new ZipFile(file);
    for (const e of zip.entries) {
      // Names are compared in NFC; the entry object keeps the archive's own bytes for reading.
      const name = e.name.normalize('NFC');
      const m = name.match(ENTRY);
      if (!m) continue;
      found.push({ alphabet: m[1], character: m[2], drawer: Number(m[4]), id: name });
      entries.set(name, { zip, entry: e });
    }
  }
  // An archive entry's CRC and size change with its content: no stat needed.
  const source: ImageSource = {
    identity: `omniglot:${zips.join('|')}`,
    read: (id) => entries.get(id)!.zip.read(entries.get(id)!.entry),
    stamp: (id) => {
      const e = entries.get(id)?.entry;
      return e ? [e.crc32, e.compressedSize] : null;
    },
    folder: () => null,
  };
  if (found.length === 0) throw new UsageError(`no Omniglot images (<set>/<Alphabet>/characterNN/<id>_<drawer>.png) in ${zips.join(', ')}.`);
  const nodes = new Map<string, { id: string; parent: string | null; name: string }>();
  for (const f of found) {
    nodes.set(joinNames([f.alphabet]), { id: joinNames([f.alphabet]), parent: null, name: f.alphabet });
    const id = joinNames([f.alphabet, f.character]);
    nodes.set(id, { id, parent: joinNames([f.alphabet]), name: f.character });
  }
  const classes = [...nodes.values()].filter((n) => n.parent !== null).map((n) => n.id).sort();
  const hierarchy = new Hierarchy('root', [...nodes.values()], classes, new Map([[1, 'alphabet'], [2, 'character']]));
  const index = new Map(classes.map((c, i) => [c, i]));
  found.sort((a, b) => (a.id < b.id ? -1 : 1));
  const item = (f: (typeof found)[number]) => ({ id: f.id, cls: index.get(joinNames([f.alphabet, f.character]))! });
  const train = refsOf(found.filter((f) => f.drawer <= OMNIGLOT_TRAIN_DRAWERS).map(item));
  const test = refsOf(found.filter((f) => f.drawer > OMNIGLOT_TRAIN_DRAWERS).map(item));
  return { format: 'omniglot', hierarchy, source, train, test };
}
