import { Command, Option } from 'commander';
import { describeKeys } from '../config/keys';
import { backendNames, BackendChoice, parseBackend } from '../engine';
import { nearest, UsageError } from '../util/errors';

export interface CommonOptions {
  backend: BackendChoice;
  threads?: number;
  quiet: boolean;
}

/** `--backend`, `--threads`, `--quiet`: on every command that computes. */
export function withCommonOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--backend <name>', `backend: ${backendNames().join(', ')} (auto: a hardware GPU through webgpu, else tensorflow, else native, else wasm, else cpu; env GRANULAR_BACKEND)`).default(undefined))
    .option('--threads <n>', 'threads for backends that use several (env GRANULAR_THREADS)')
    .option('--quiet', 'one line per epoch, no progress bar', false);
}

export function commonOptions(o: Record<string, unknown>): CommonOptions {
  const t = (o.threads as string | undefined) ?? process.env.GRANULAR_THREADS;
  let threads: number | undefined;
  if (t !== undefined) {
    threads = Number(t);
    if (!Number.isInteger(threads) || threads < 1) throw new UsageError(`--threads '${t}' must be a positive integer.`);
  }
  return { backend: parseBackend(o.backend as string | undefined), threads, quiet: Boolean(o.quiet) };
}

/** Repeatable options (`--set a=1 --set b=2`). */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * The one error handler: usage errors print one clear line and exit 2; anything
 * else is a bug or a failed run and exits 1 with its message.
 */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<number | void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    let code: number;
    try {
      code = (await fn(...args)) ?? 0;
    } catch (e) {
      if (e instanceof UsageError) {
        process.stderr.write(`granular: error: ${e.message}\n`);
        code = 2;
      } else {
        const err = e as Error;
        process.stderr.write(`granular: failed: ${err.message}\n${process.env.GRANULAR_DEBUG ? err.stack + '\n' : ''}`);
        code = 1;
      }
    }
    process.exitCode = code;
  };
}

/**
 * Config keys for an option the command does not have (`--epochs 2`,
 * `--batch-size=32`): the keys whose last segment is that name, else the
 * nearest key by spelling. Empty when nothing is close.
 */
export function keysForOption(flag: string): string[] {
  const name = flag.replace(/^-+/, '').replace(/=.*$/, '').replace(/-/g, '_');
  const keys = describeKeys().filter((k) => !k.section && !k.key.startsWith('finetune.unfreeze.')).map((k) => k.key);
  if (keys.includes(name)) return [name];
  const exact = keys.filter((k) => k.endsWith(`.${name}`));
  if (exact.length) return exact;
  const near = nearest(name, keys);
  return near ? [near] : [];
}

/**
 * Replace commander's unknown-option error on a command that takes --set:
 * `--epochs 2` is answered with `--set train.epochs=2`. An option of the
 * command misspelt (`--levl`) keeps commander's own "did you mean".
 */
export function suggestSetForUnknownOptions(cmd: Command, argv: readonly string[] = process.argv): void {
  const c = cmd as unknown as { unknownOption(flag: string): void };
  const original = c.unknownOption.bind(cmd);
  c.unknownOption = (flag: string) => {
    const own = cmd.options.map((o) => o.long).filter((l): l is string => !!l);
    const keys = flag.startsWith('--') ? keysForOption(flag) : [];
    if (!keys.length || nearest(flag, own)) return original(flag);
    const eq = flag.indexOf('=');
    const i = argv.indexOf(flag);
    const next = i >= 0 ? argv[i + 1] : undefined;
    const value = eq > 0 ? flag.slice(eq + 1) : next !== undefined && !next.startsWith('--') ? next : '<value>';
    const bare = eq > 0 ? flag.slice(0, eq) : flag;
    const sets = keys.map((k) => `--set ${k}=${value}`);
    cmd.error(
      `error: unknown option '${bare}'. Config keys are set with --set: ${sets.length > 1 ? `one of ${sets.join(', ')}` : sets[0]}` +
        ` ('granular config --keys' lists every key).`,
      { code: 'commander.unknownOption', exitCode: 2 },
    );
  };
}
