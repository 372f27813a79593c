import * as path from 'node:path';
import { Command } from 'commander';
import { Stage } from '../runs/run';
import { stopWithSweep } from '../runs/watchdog';
import { runStage, StageOutcome } from '../train/stage';
import { granularCommand, shellQuote } from '../util/shell';
import { driveSweep, sweepOptions } from './sweep';
import { refuseCommaListsWithoutMultirun, multirunDoc } from '../sweep/multirun';
import { sweepFromDoc } from '../sweep/run';
import { UsageError } from '../util/errors';
import { exitQuietlyOnEpipe } from '../util/stdout';
import { action, collect, commonOptions, withCommonOptions } from './common';

/** The options pretrain and finetune share, with the action that runs the stage. */
export function stageCommand(cmd: Command, stage: Stage): Command {
  cmd
    .option('--config <file>', (stage === 'pretrain' ? 'YAML config (defaults < file < --set < flags)' : 'YAML config (defaults < source config < file < --set < flags)') + '; repeatable: files compose in order, a later one overriding an earlier one', collect, [])
    .option('--set <key=value>', 'override a config key (repeatable; value parsed as YAML)', collect, [])
    .option('--run-dir <dir>', 'exact output folder (must not exist or be empty)')
    .option('--resume <run_dir>', 'continue a crashed or interrupted run exactly where its checkpoint left it')
    .option('--force', 'with --resume: continue on another backend or thread count (no longer bit-identical)', false)
    .option('--json', 'print the final line on stdout as one JSON object (summary.json plus run_dir), for scripts', false)
    .option('-m, --multirun', 'one run per value of every comma list in --set/--level' + (stage === 'finetune' ? '/--freeze' : '') + ' (--set seed=0,1,2; the cross product of several), run as a sweep: checked first, resumable, --dry-run/--emit (Hydra\'s -m)', false)
    .option('--sweep-name <name>', `with -m: runs go to <runs-root>/<name>/ (default ${stage}-multirun); the same command again resumes them`)
    .option('--runs-root <dir>', 'with -m: the folder that holds <name>/ (default runs)')
    .option('--jobs <n>', 'with -m: runs at once (as granular sweep --jobs)')
    .option('--retry', 'with -m: run failed runs again', false)
    .option('--dry-run', "with -m: check every run and print one command per run that still needs work; run nothing", false)
    .option('--emit <kind>', 'with -m: write a shell or slurm script instead of running (as granular sweep --emit)');
  withCommonOptions(cmd);
  return cmd.action(
    action(async (o: Record<string, unknown>) => {
      if (o.multirun) return multirun(stage, o);
      const sweepOnly = ['sweepName', 'runsRoot', 'jobs', 'emit', 'retry', 'dryRun'].filter((k) => o[k] !== undefined && o[k] !== false);
      if (sweepOnly.length) throw new UsageError(`${sweepOnly.map(flagOf).join(', ')} ${sweepOnly.length > 1 ? 'belong' : 'belongs'} to a multirun: add -m (--multirun), or drop ${sweepOnly.length > 1 ? 'them' : 'it'}.`);
      refuseCommaListsWithoutMultirun(o.set as string[], o.level as string | undefined);
      stopWithSweep();
      const out = await runStage({
        stage,
        configFile: o.config as string[],
        sets: o.set as string[],
        level: o.level as string | undefined,
        freeze: o.freeze as string | undefined,
        from: o.from as string | undefined,
        runDir: o.runDir as string | undefined,
        resume: o.resume as string | undefined,
        force: Boolean(o.force),
        ...commonOptions(o),
        argv: ['granular', ...process.argv.slice(2)],
      });
      printOutcome(out, Boolean(o.json), stage, Boolean(o.quiet));
      return out.exitCode;
    }),
  );
}

const flagOf = (k: string) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/**
 * `granular pretrain|finetune -m ...`: the comma lists of --set (and --level,
 * --freeze) expanded into a one-stage sweep (sweep/multirun.ts) and driven as
 * `granular sweep` drives a sweep file: every run checked before any starts,
 * completed runs skipped, interrupted ones resumed, --dry-run and --emit.
 */
async function multirun(stage: Stage, o: Record<string, unknown>): Promise<number> {
  exitQuietlyOnEpipe();
  const single = ['runDir', 'resume', 'json', 'force'].filter((k) => o[k] !== undefined && o[k] !== false);
  if (single.length) throw new UsageError(`${single.map(flagOf).join(', ')} ${single.length > 1 ? 'are' : 'is'} for one run; -m runs a sweep (runs go to <runs-root>/<sweep-name>/<run>/, and the same command again resumes them). Drop ${single.length > 1 ? 'them' : 'it'}.`);
  const configs = o.config as string[];
  if (configs.length > 1) throw new UsageError(`-m takes at most one --config (got ${configs.length}: ${configs.join(', ')}): compose them into one file, or write a sweep file (granular sweep) whose base: is one of them and whose set: holds the rest.`);
  const name = (o.sweepName as string | undefined) ?? `${stage}-multirun`;
  const doc = multirunDoc({ command: stage, sets: o.set as string[], level: o.level as string | undefined, freeze: o.freeze as string | undefined, from: o.from as string | undefined, name });
  if (configs.length) doc.base = configs[0];
  const commandLine = ['granular', ...process.argv.slice(2)];
  const sweep = sweepFromDoc(doc, { file: null, where: 'the command line', dir: process.cwd(), runsRoot: (o.runsRoot as string | undefined) ?? 'runs', commandLine });
  return driveSweep(sweep, { ...sweepOptions(o), stages: [] }, commonOptions(o));
}

/**
 * The last line a stage prints on stdout: status, folder, headline numbers;
 * with --json the summary as one JSON object. After a pretraining run, stderr
 * says what usually comes next.
 */
export function printOutcome(out: StageOutcome, json = false, stage?: Stage, quiet = false): void {
  const s = out.summary;
  const num = (k: string) => (typeof s[k] === 'number' ? ` ${k}=${(s[k] as number).toFixed(4)}` : '');
  if (json) {
    process.stdout.write(JSON.stringify({ ...s, run_dir: out.runDir }) + '\n');
    if (s.status === 'failed') process.stderr.write(`granular: run failed: ${s.error}\n  details in ${out.runDir}/summary.json\n`);
    return;
  }
  if (s.status === 'completed') {
    const best = typeof s.best_epoch === 'number' && s.best_epoch !== s.epochs_trained ? ` (best val_acc at epoch ${s.best_epoch}: model-best/)` : '';
    process.stdout.write(`completed ${out.runDir}${num('test_acc')}${num('test_acc_hard')}${num('train_images_per_second')}${best}\n`);
    if (stage === 'pretrain' && !quiet) {
      // Commands that run as printed, pasted into any shell in any folder: no npx, no PATH
      // needed (granularCommand), the run named by its absolute path.
      const g = granularCommand();
      const dir = shellQuote(path.resolve(out.runDir));
      process.stderr.write(`next: fine-tune it on the coarsest level (add --freeze all for a linear probe), or evaluate it again:\n  ${g} finetune --from ${dir}\n  ${g} eval ${dir}\n`);
    }
  } else if (s.status === 'interrupted') {
    process.stdout.write(`interrupted ${out.runDir}: resume with '${s.resume}'\n`);
  } else {
    process.stderr.write(`granular: run failed: ${s.error}\n  details in ${out.runDir}/summary.json\n`);
  }
}
