import { Command, Option } from 'commander';
import { BackendChoice, parseBackend } from '../engine/backend';
import { UsageError } from '../util/errors';

export interface CommonOptions {
  backend: BackendChoice;
  threads?: number;
  quiet: boolean;
}

/** `--backend`, `--threads`, `--quiet`: on every command that computes. */
export function withCommonOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--backend <name>', 'tfjs backend: auto (tensorflow, else native, else wasm, else cpu), tensorflow, native, wasm, cpu').default(undefined))
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
