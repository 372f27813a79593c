import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse, quote } from 'shell-quote';

/**
 * Command lines as a POSIX shell reads them (command.txt, --dry-run, the
 * scripts of --emit), quoted and split by the shell-quote package.
 */

/** Arguments left as they are: nothing in them means anything to a shell, so commands stay readable. */
const SAFE = /^[A-Za-z0-9_./:=@,+%-]+$/;

/** One argument quoted for a POSIX shell where it needs it (shell-quote's `quote`). */
export function shellQuote(arg: string): string {
  return SAFE.test(arg) ? arg : quote([arg]);
}

/**
 * A command line (e.g. command.txt) split back into its arguments with
 * shell-quote's `parse`. `$NAME` stays literal (no environment is read);
 * what the parser returns as a glob, operator or comment comes back as text.
 */
export function shellSplit(line: string): string[] {
  return parse(line, (name) => `$${name}`).map((e) => {
    if (typeof e === 'string') return e;
    if ('pattern' in e) return e.pattern;
    if ('comment' in e) return `#${e.comment}`;
    return e.op;
  });
}

/** Whether an executable named `name` is on PATH. */
export function onPath(name: string): boolean {
  return whichAll(name).length > 0;
}

/** Every executable named `name` on PATH, in PATH order. */
function whichAll(name: string): string[] {
  const found: string[] = [];
  for (const d of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!d) continue;
    try {
      fs.accessSync(path.join(d, name), fs.constants.X_OK);
      found.push(path.join(d, name));
    } catch {
      /* not here */
    }
  }
  return found;
}

/** This checkout's bin/granular.js (dist/src/util/ -> the package root). */
export function granularBin(): string {
  return path.resolve(__dirname, '..', '..', '..', 'bin', 'granular.js');
}

/**
 * A PATH folder that exists only while npm runs something: npx's temporary
 * package folder (`<cache>/_npx/<hash>/node_modules/.bin`) or a project's
 * `node_modules/.bin`, which `npm exec`/`npm run` prepend. A command found
 * there is gone in a plain shell or on a compute node.
 */
function temporaryBinFolder(dir: string): boolean {
  const parts = path.resolve(dir).split(path.sep);
  return parts.includes('_npx') || (parts[parts.length - 1] === '.bin' && parts[parts.length - 2] === 'node_modules');
}

function realpath(p: string): string | null {
  try {
    return fs.realpathSync(p);
  } catch {
    return null;
  }
}

/**
 * Whether `granular` is really installed: the first `granular` on PATH lives
 * in a lasting folder (not one npm exec/npx prepends for the moment) and
 * resolves to this same package's bin/granular.js (npm link, a global install
 * of this checkout). Another granular on PATH (another version) does not count.
 */
export function granularInstalled(): boolean {
  const first = whichAll('granular')[0];
  if (!first || temporaryBinFolder(path.dirname(first))) return false;
  const mine = realpath(granularBin());
  return mine !== null && realpath(first) === mine;
}

/**
 * The command that starts this granular, as printed for a shell (the
 * `next:` lines, `sweep --dry-run`, the scripts of `--emit`, `summary.json`'s
 * `resume`): `granular` where it is really installed (see granularInstalled),
 * else the node that runs this process and the absolute path of this
 * checkout's bin/granular.js, so the line runs as printed from any folder, in
 * a plain shell and on a compute node that shares the filesystem.
 */
export function granularCommand(): string {
  if (granularInstalled()) return 'granular';
  return `${shellQuote(process.execPath)} ${shellQuote(granularBin())}`;
}
