import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { shellScript, slurmScript } from '../report/sweep-emit';
import { shellQuote } from '../util/shell';
import { checkOwnership, execute, loadSweep, steps, writeSweepRecord } from '../report/sweep-run';
import { UsageError } from '../util/errors';
import { writeFileAtomic } from '../util/fsx';
import { exitQuietlyOnEpipe } from '../report/stdout';
import { action, commonOptions, withCommonOptions } from './common';

export function sweepCommand(): Command {
  const cmd = new Command('sweep')
    .description('run every run of a sweep file (grids over config keys, chained stages), skipping finished runs and resuming crashed ones')
    .argument('<sweep_file>', 'YAML sweep file (name:, base:, stages:; see README.md)')
    .option('--jobs <n>', 'runs at once, each its own process (fine-tuning runs wait for their source)', '1')
    .option('--retry', 'run failed runs again (resumed from their last checkpoint)', false)
    .option('--dry-run', "print one 'granular ...' command per run that still needs work, in dependency order, and run nothing", false)
    .option('--emit <kind>', 'write a script instead of running: shell (sequential) or slurm (one job array per stage)')
    .option('--stage <name>', 'only this stage (repeatable; e.g. --dry-run per stage for xargs -P)', (v: string, p: string[] = []) => [...p, v], [])
    .option('--runs-root <dir>', 'folder that holds runs/<sweep-name>/', 'runs')
    .addHelpText(
      'after',
      `
Runs go to <runs-root>/<name>/<stage>-<key=value,...>/ (':' and '/' dropped: depth:2 -> depth2).
A run whose summary.json says completed is skipped; one with config.yaml and no summary (crashed)
or status interrupted is resumed; a failed one is retried only with --retry. Exit 1 if any run failed.

  granular sweep examples/label-granularity/sweep.yaml --jobs 2
  granular sweep s.yaml --dry-run --stage pretrain | xargs -P 4 -I{} sh -c '{}'
  granular sweep s.yaml --emit slurm && bash runs/<name>/sweep.slurm`,
    );
  withCommonOptions(cmd);
  return cmd.action(
    action(async (file: string, o: Record<string, unknown>) => {
      exitQuietlyOnEpipe();
      const c = commonOptions(o);
      const jobs = Number(o.jobs);
      if (!Number.isInteger(jobs) || jobs < 1) throw new UsageError(`--jobs '${o.jobs}' must be a positive integer.`);
      const emit = o.emit as string | undefined;
      if (emit !== undefined && emit !== 'shell' && emit !== 'slurm') throw new UsageError(`--emit '${emit}' must be shell or slurm.`);
      if (emit && o.dryRun) throw new UsageError('--dry-run and --emit both describe the sweep without running it; choose one.');

      const sweep = loadSweep(file, o.runsRoot as string);
      const only = o.stage as string[];
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

      const todo = steps(sweep, Boolean(o.retry)).filter((s) => !only.length || only.includes(s.run.stage));
      if (o.dryRun) {
        for (const s of todo) if (s.args) process.stdout.write(['granular', ...s.args, '--quiet'].map(shellQuote).join(' ') + '\n');
        const left = todo.filter((s) => !s.args);
        process.stderr.write(`sweep ${sweep.plan.name}: ${todo.length - left.length} to run` + (left.length ? `, ${left.length} left alone (${countBy(left.map((s) => s.note ?? s.state))})` : '') + '\n');
        return 0;
      }

      writeSweepRecord(sweep);
      const childArgs = [...(o.backend ? ['--backend', String(o.backend)] : []), ...(c.threads ? ['--threads', String(c.threads)] : [])];
      const log = c.quiet ? () => undefined : undefined;
      const r = await execute(sweep, todo, { jobs, childArgs, log });
      const parts = [`${r.completed.length} completed`, `${r.failed.length} failed`, `${r.skipped.length} skipped`];
      if (r.blocked.length) parts.push(`${r.blocked.length} blocked (source not completed)`);
      if (r.interrupted.length) parts.push(`${r.interrupted.length} interrupted`);
      if (r.notStarted.length) parts.push(`${r.notStarted.length} not started`);
      process.stdout.write(`sweep ${sweep.plan.name}: ${parts.join(', ')}  (runs in ${sweep.runsDir})\n`);
      const leftFailed = todo.filter((s) => s.state === 'failed' && !s.args).map((s) => s.run.name);
      if (leftFailed.length) process.stdout.write(`${leftFailed.length} of the skipped runs failed earlier (${leftFailed.slice(0, 3).join(', ')}${leftFailed.length > 3 ? ', ...' : ''}); run again with --retry to retry them\n`);
      if (r.failed.length) process.stdout.write(`failed: ${r.failed.join(', ')}\n  logs in ${sweep.runsDir}/logs/; run again with --retry to retry them\n`);
      if (r.signal) return r.signal === 'SIGINT' ? 130 : 143;
      return r.failed.length || r.blocked.length || leftFailed.length ? 1 : 0;
    }),
  );
}

function countBy(items: string[]): string {
  const m = new Map<string, number>();
  for (const i of items) m.set(i, (m.get(i) ?? 0) + 1);
  return [...m].map(([k, n]) => `${n} ${k}`).join(', ');
}
