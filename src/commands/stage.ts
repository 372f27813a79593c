import * as path from 'node:path';
import { Command } from 'commander';
import { Stage } from '../runs/run';
import { stopWithSweep } from '../runs/watchdog';
import { runStage, StageOutcome } from '../train/stage';
import { granularCommand, shellQuote } from '../util/shell';
import { action, collect, commonOptions, withCommonOptions } from './common';

/** The options pretrain and finetune share, with the action that runs the stage. */
export function stageCommand(cmd: Command, stage: Stage): Command {
  cmd
    .option('--config <file>', (stage === 'pretrain' ? 'YAML config (defaults < file < --set < flags)' : 'YAML config (defaults < source config < file < --set < flags)') + '; repeatable: files compose in order, a later one overriding an earlier one', collect, [])
    .option('--set <key=value>', 'override a config key (repeatable; value parsed as YAML)', collect, [])
    .option('--run-dir <dir>', 'exact output folder (must not exist or be empty)')
    .option('--resume <run_dir>', 'continue a crashed or interrupted run exactly where its checkpoint left it')
    .option('--force', 'with --resume: continue on another backend or thread count (no longer bit-identical)', false)
    .option('--json', 'print the final line on stdout as one JSON object (summary.json plus run_dir), for scripts', false);
  withCommonOptions(cmd);
  return cmd.action(
    action(async (o: Record<string, unknown>) => {
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
