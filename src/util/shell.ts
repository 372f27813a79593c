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
