import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { checkSweepRuns } from '../sweep/check';
import { granularPrefix, shellScript, slurmScript } from '../sweep/emit';
import { shellQuote } from '../util/shell';
import { checkOwnership, execute, LoadedSweep, loadSweep, Step, steps, writeSweepRecord } from '../sweep/run';
import { UsageError } from '../util/errors';
import { readJson, writeFileAtomic } from '../util/fsx';
import { exitQuietlyOnEpipe } from '../util/stdout';
import { action, CommonOptions, commonOptions, withCommonOptions } from './common';

export function sweepCommand(): Command {
  const cmd = new Command('sweep')
    .description('run every run of a sweep file (grids over config keys, chained stages), skipping finished runs and resuming crashed ones')
    .argument('<sweep_file>', 'YAML sweep file (name:, base:, stages:; the format: examples/README.md)')
    .option('--jobs <n>', 'runs at once, each its own process with cores/N threads unless --threads (fine-tuning runs wait for their source)', '1')
    .option('--retry', 'run failed runs again (resumed from their last checkpoint)', false)
    .option('--dry-run', "check every run, print one 'granular ...' command per run that still needs work (prefix: $GRANULAR), in dependency order, and run nothing", false)
    .option('--emit <kind>', 'write a script instead of running: shell (sequential) or slurm (one job array per stage)')
    .option('--stage <name>', 'only this stage (repeatable; e.g. --dry-run per stage for xargs -P)', (v: string, p: string[] = []) => [...p, v], [])
    .option('--runs-root <dir>', 'folder that holds runs/<sweep-name>/', 'runs')
    .addHelpText(
      'after',
      `
The sweep file format (name:, base:, stages: with grid:, set:, runs:, from:, scratch:) is
described in examples/README.md, with worked studies beside it.
Before anything runs (and for --dry-run and --emit), every run's config, level and data are
checked; a problem exits 2 naming the run. Runs go to <runs-root>/<name>/<stage>-<key=value,...>/
(':' and '/' dropped: depth:2 -> depth2).
A run whose summary.json says completed is skipped; one with config.yaml and no summary (crashed)
or status interrupted is resumed; a failed one is retried only with --retry. Exit 1 if any run failed.

  granular sweep examples/label-granularity/sweep.yaml --jobs 2
  granular sweep s.yaml --dry-run | sh
  granular sweep s.yaml --dry-run --stage pretrain | tr '\\n' '\\0' | xargs -0 -n 1 -P 4 sh -c
  granular sweep s.yaml --emit slurm && bash runs/<name>/sweep.slurm`,
    );
  withCommonOptions(cmd);
  return cmd.action(
    action(async (file: string, o: Record<string, unknown>) => {
      exitQuietlyOnEpipe();
      const c = commonOptions(o);
      const opts = sweepOptions(o);
      return driveSweep(loadSweep(file, o.runsRoot as string), { ...opts, stages: o.stage as string[] }, c);
    }),
  );
}

/** How to drive a sweep: `granular sweep`'s options, which multirun (`pretrain -m`) shares. */
export interface DriveOptions {
  jobs: number;
  retry: boolean;
  dryRun: boolean;
  emit?: 'shell' | 'slurm';
  /** Only these stages (--stage); empty: all. */
  stages: string[];
  /** --backend as given, passed on to every run. */
  backend?: string;
}

/** --jobs, --retry, --dry-run and --emit read and checked (UsageError for a bad value or a bad pair). */
export function sweepOptions(o: Record<string, unknown>): Omit<DriveOptions, 'stages'> {
  const jobs = Number(o.jobs ?? 1);
  if (!Number.isInteger(jobs) || jobs < 1) throw new UsageError(`--jobs '${o.jobs}' must be a positive integer.`);
  const emit = o.emit as string | undefined;
  if (emit !== undefined && emit !== 'shell' && emit !== 'slurm') throw new UsageError(`--emit '${emit}' must be shell or slurm.`);
  if (emit && o.dryRun) throw new UsageError('--dry-run and --emit both describe the sweep without running it; choose one.');
  return { jobs, retry: Boolean(o.retry), dryRun: Boolean(o.dryRun), ...(emit ? { emit: emit as 'shell' | 'slurm' } : {}), ...(o.backend ? { backend: String(o.backend) } : {}) };
}

/**
 * Check, then run (or --dry-run, or --emit) a loaded sweep: every run's config,
 * level and data are checked before anything runs, the run tree must be this
 * sweep's, completed runs are skipped and crashed or interrupted ones resumed.
 * Returns the exit code (0, 1 if a run failed, 130/143 if interrupted);
 * UsageError (exit 2) for a bad run, with nothing run.
 */
export async function driveSweep(sweep: LoadedSweep, d: DriveOptions, c: CommonOptions): Promise<number> {
  const { jobs, emit } = d;
  // Every run's config, level and data are checked now: a bad one stops the sweep before anything runs.
  await checkSweepRuns(sweep);
  const only = d.stages;
  for (const s of only) {
    if (!sweep.plan.stages.some((x) => x.name === s)) throw new UsageError(`--stage '${s}': sweep '${sweep.plan.name}' has stages ${sweep.plan.stages.map((x) => x.name).join(', ')}.`);
  }
  checkOwnership(sweep);

  if (emit) {
    if (only.length) throw new UsageError('--emit writes the whole sweep; drop --stage.');
    const rootFromSweepDir = path.relative(path.resolve(sweep.runsDir), process.cwd()).split(path.sep).join('/') || '.';
    const opts = { base: sweep.base, runsDir: sweep.runsDir, rootFromSweepDir };
    const out = path.join(sweep.runsDir, emit === 'slurm' ? 'sweep.slurm' : 'sweep.sh');
    writeSweepRecord(sweep);
    writeFileAtomic(out, emit === 'slurm' ? slurmScript(sweep.plan, opts) : shellScript(sweep.plan, opts));
    fs.chmodSync(out, 0o755);
    const sizes = sweep.plan.stages.map((s) => `${s.name} ${s.runs.length}`).join(', ');
    process.stdout.write(`wrote ${out} (${sweep.plan.runs.length} runs: ${sizes})\nrun it with: bash ${out}\n`);
    return 0;
  }

  const todo = steps(sweep, d.retry).filter((s) => !only.length || only.includes(s.run.stage));
  // Runs at once share the cores: each gets cores / jobs threads unless --threads says otherwise.
  const cores = os.availableParallelism?.() ?? os.cpus().length;
  const threads = c.threads ?? (jobs > 1 ? Math.max(1, Math.floor(cores / jobs)) : undefined);
  const childArgs = [...(d.backend ? ['--backend', d.backend] : []), ...(threads ? ['--threads', String(threads)] : [])];
  // A run continues on the thread count it started with (bit-identical resume needs it) unless --threads says otherwise.
  const argsFor = (st: Step) => (st.state === 'new' || c.threads ? childArgs : resumeThreads(path.join(sweep.runsDir, st.run.name), childArgs));
  if (d.dryRun) {
    // One shell command per line: a line break inside an argument would split one.
    const broken = todo.find((s) => s.args?.some((a) => /[\r\n\0]/.test(a)));
    if (broken) {
      throw new UsageError(
        `run '${broken.run.name}' has an argument with a line break, which a one-command-per-line listing cannot carry. ` +
          `Run it without --dry-run, or write a script with --emit shell.`,
      );
    }
    const prefix = granularPrefix();
    for (const s of todo) if (s.args) process.stdout.write(`${prefix} ${[...s.args, '--quiet', ...argsFor(s)].map(shellQuote).join(' ')}\n`);
    const left = todo.filter((s) => !s.args);
    process.stderr.write(`sweep ${sweep.plan.name}: ${todo.length - left.length} to run` + (left.length ? `, ${left.length} left alone (${countBy(left.map((s) => s.note ?? s.state))})` : '') + '\n');
    return 0;
  }

  writeSweepRecord(sweep);
  const toRun = todo.filter((s) => s.args).length;
  if (toRun && !c.quiet) process.stderr.write(`sweep ${sweep.plan.name}: ${toRun} run(s) to do, ${Math.min(jobs, toRun)} at a time${threads ? `, ${threads} thread(s) each${c.threads ? '' : ` (${cores} cores / --jobs ${jobs})`}` : ''}\n`);
  const log = c.quiet ? () => undefined : undefined;
  const r = await execute(sweep, todo, { jobs, childArgs: argsFor, log });
  const parts = [`${r.completed.length} completed`, `${r.failed.length} failed`, `${r.skipped.length} skipped`];
  if (r.blocked.length) parts.push(`${r.blocked.length} blocked (source not completed)`);
  if (r.interrupted.length) parts.push(`${r.interrupted.length} interrupted`);
  if (r.notStarted.length) parts.push(`${r.notStarted.length} not started`);
  process.stdout.write(`sweep ${sweep.plan.name}: ${parts.join(', ')}  (runs in ${sweep.runsDir})\n`);
  const leftFailed = todo.filter((s) => s.state === 'failed' && !s.args).map((s) => s.run.name);
  if (leftFailed.length) process.stdout.write(`${leftFailed.length} of the skipped runs failed earlier (${leftFailed.slice(0, 3).join(', ')}${leftFailed.length > 3 ? ', ...' : ''}); run again with --retry to retry them\n`);
  const retriable = r.failed.filter((n) => !r.refused.includes(n));
  if (retriable.length) process.stdout.write(`failed: ${retriable.join(', ')}\n  logs in ${sweep.runsDir}/logs/; run again with --retry to retry them\n`);
  if (r.refused.length) {
    process.stdout.write(`refused (exit 2: bad usage, config or data; nothing was written): ${r.refused.join(', ')}\n  the reason is in ${sweep.runsDir}/logs/<run>.log; fix it (the data changed since the sweep was checked?) and run the sweep again; --retry cannot help\n`);
  }
  if (r.signal) return r.signal === 'SIGINT' ? 130 : 143;
  return r.failed.length || r.blocked.length || leftFailed.length ? 1 : 0;
}

/** childArgs with --threads replaced by the count the run at `dir` started with (env.json), when it has one. */
function resumeThreads(dir: string, childArgs: string[]): string[] {
  let threads: unknown;
  try {
    threads = readJson<{ threads?: unknown }>(path.join(dir, 'env.json')).threads;
  } catch {
    return childArgs;
  }
  if (typeof threads !== 'number') return childArgs;
  const i = childArgs.indexOf('--threads');
  const rest = i >= 0 ? [...childArgs.slice(0, i), ...childArgs.slice(i + 2)] : childArgs;
  return [...rest, '--threads', String(threads)];
}

function countBy(items: string[]): string {
  const m = new Map<string, number>();
  for (const i of items) m.set(i, (m.get(i) ?? 0) + 1);
  return [...m].map(([k, n]) => `${n} ${k}`).join(', ');
}
