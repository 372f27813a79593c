import * as fs from 'node:fs';
import * as path from 'node:path';
import { Config } from '../../config/schema';
import { readEdgeList, readNames, wordnetTree } from '../../hierarchy/wordnet';
import { UsageError } from '../../util/errors';
import { Catalog, folderSource } from '../cache/catalog';
import { folderRefs, requireRoot, scanClassFolders } from './folders';

/**
 * ImageNet-style folders named by wnid (`ROOT/train/<wnid>/…`, `ROOT/test/`
 * or `ROOT/val/`, or ROOT/<wnid>/ with data.test_fraction), a
 * `wordnet.is_a.txt` edge list and optional `words.txt`. Folders of internal
 * synsets are classes like any other.
 */
export function wordnetCatalog(cfg: Config): Catalog {
  const root = requireRoot(cfg);
  const isA = cfg.data.is_a ? path.resolve(cfg.data.is_a) : path.join(root, 'wordnet.is_a.txt');
  const wordsFile = cfg.data.words ? path.resolve(cfg.data.words) : path.join(root, 'words.txt');
  if (cfg.data.words && !fs.existsSync(wordsFile)) throw new UsageError(`data.words '${wordsFile}' does not exist.`);
  const names = fs.existsSync(wordsFile) ? readNames(wordsFile) : undefined;
  const { edges, lineOf } = readEdgeList(isA);
  const folders = scanClassFolders(root, cfg, (n) => n === 'cache');
  const classes = [...new Set([...folders.train.keys(), ...folders.test.keys()])].sort();
  const h = wordnetTree(edges, classes, names, isA, lineOf);
  const index = new Map(h.classes.map((c, i) => [c, i]));
  const classOf = (wnid: string) => index.get(wnid)!;
  const train = folderRefs(folders.train, classOf);
  const test = folderRefs(folders.test, classOf);
  const source = folderSource('wordnet', root, new Map([...train.onDisk, ...test.onDisk]));
  return { format: 'wordnet', hierarchy: h, source, train: train.refs, test: test.refs };
}
