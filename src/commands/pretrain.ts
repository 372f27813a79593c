import { Command } from 'commander';
import { runStage } from '../train/stage';
import { action, collect, commonOptions, withCommonOptions } from './common';
import { printOutcome } from './outcome';

export function pretrainCommand(): Command {
  const cmd = new Command('pretrain')
    .description('train a network at one level of the class hierarchy and save it to a run folder')
    .option('--config <file>', 'YAML config (defaults < file < --set < flags)')
    .option('--level <level>', 'label level: leaf, top|coarse, a level name, depth:N, height:N, nodes:FILE')
    .option('--set <key=value>', 'override a config key (repeatable; value parsed as YAML)', collect, [])
    .option('--run-dir <dir>', 'exact output folder (must not exist or be empty)')
    .option('--resume <run_dir>', 'continue a crashed or interrupted run exactly where its checkpoint left it')
    .option('--force', 'with --resume: continue on another backend or thread count (no longer bit-identical)', false);
  withCommonOptions(cmd);
  return cmd.action(
    action(async (o: Record<string, unknown>) => {
      const c = commonOptions(o);
      const out = await runStage({
        stage: 'pretrain',
        configFile: o.config as string | undefined,
        sets: o.set as string[],
        level: o.level as string | undefined,
        runDir: o.runDir as string | undefined,
        resume: o.resume as string | undefined,
        force: Boolean(o.force),
        ...c,
        argv: ['granular', ...process.argv.slice(2)],
      });
      printOutcome(out);
      return out.exitCode;
    }),
  );
}
