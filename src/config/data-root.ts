import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../util/errors';
import { missingPathHint } from '../util/paths';
import { Config } from './schema';

/**
 * Which `data.format` a dataset folder looks like, from the files each format
 * reads (README "Datasets and hierarchies"): `taxonomy.csv` → imagefolder,
 * `wordnet.is_a.txt` → wordnet, `train.json`/`val.json` → inat2021,
 * `images_*.zip` → omniglot. Null when none fits (or it is not a folder).
 */
export function guessFormat(dir: string): string | null {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return /images_.*\.zip$/.test(dir) ? 'omniglot' : null;
  }
  if (names.includes('taxonomy.csv')) return 'imagefolder';
  if (names.includes('wordnet.is_a.txt')) return 'wordnet';
  if (names.includes('train.json') || names.includes('val.json')) return 'inat2021';
  if (names.some((n) => /^images_.*\.zip$/.test(n))) return 'omniglot';
  return null;
}

/**
 * Data settings that cannot mean what they say, refused before anything is
 * read (exit 2), instead of the unrelated error a loader would meet later:
 * - `data.root` with `data.format: synthetic` (the generator reads nothing
 *   from disk, so the folder would be silently ignored): names the format the
 *   folder looks like;
 * - a `data.root` that does not exist: names the nearest existing folder and
 *   the entry nearest by spelling (a typo'd dataset folder).
 */
export function checkDataRoot(cfg: Config): void {
  const root = cfg.data.root;
  if (cfg.data.format === 'synthetic') {
    if (root === null || root === '') return;
    const exists = fs.existsSync(root);
    const looks = exists ? guessFormat(root) : null;
    throw new UsageError(
      `data.root is '${root}', but data.format is synthetic, which generates its images and reads nothing from disk: data.root is ignored by the synthetic format. ` +
        (!exists
          ? `That folder does not exist either. ${missingPathHint(root)} `
          : looks
            ? `The folder looks like ${looks} data: add --set data.format=${looks} (or data.format: ${looks} in the config). `
            : `The folder does not look like any format (no taxonomy.csv, wordnet.is_a.txt, train.json or images_*.zip); set data.format to the one it is. `) +
        `To train on synthetic data, remove data.root (--set data.root=null).`,
    );
  }
  if (root && !fs.existsSync(root)) {
    throw new UsageError(`data.root '${root}' does not exist (data.format ${cfg.data.format}). ${missingPathHint(root)} Fix data.root in the config or with --set data.root=PATH.`);
  }
  if (root && cfg.data.format !== 'omniglot' && !fs.statSync(root).isDirectory()) {
    throw new UsageError(`data.root '${root}' is a file; data.format ${cfg.data.format} needs the dataset folder. ${path.dirname(root) !== root ? `Did you mean '${path.dirname(root)}'?` : ''}`.trim());
  }
}
