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
  return (process.env.PATH ?? '').split(path.delimiter).some((d) => {
    try {
      fs.accessSync(path.join(d, name), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * How a user types granular here, for the commands granular suggests:
 * `granular` where it is on PATH (npm link, a global install), else
 * `npx granular` (which works inside the checkout after `npm ci`).
 */
export function granularCommand(): string {
  return onPath('granular') ? 'granular' : 'npx granular';
}
