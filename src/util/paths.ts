import * as fs from 'node:fs';
import * as path from 'node:path';
import { nearest } from './errors';

/**
 * What to tell a user whose path does not exist: the deepest folder above it
 * that does exist, and the entry of that folder nearest by spelling to the
 * first missing part (a typo'd dataset or run folder), e.g.
 * "the nearest existing folder is '/d' (did you mean '/d/fashion-mnist-200'?)".
 * Never substitutes: the caller still refuses. Returns '' when nothing helps.
 */
export function missingPathHint(p: string): string {
  const abs = path.resolve(p);
  let dir = abs;
  let missing = '';
  while (!isDir(dir)) {
    const up = path.dirname(dir);
    if (up === dir) return '';
    missing = path.basename(dir);
    dir = up;
  }
  let entries: string[] = [];
  try {
    entries = fs.readdirSync(dir).filter((e) => !e.startsWith('.'));
  } catch {
    /* unreadable: name the folder only */
  }
  const guess = missing ? nearest(missing, entries) : undefined;
  return `The nearest existing folder is '${dir}'` + (guess ? `; did you mean '${path.join(dir, guess)}'?` : entries.length ? ` (it holds ${entries.slice(0, 8).join(', ')}${entries.length > 8 ? ', ...' : ''}).` : ' (empty).');
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}
