import { Command } from 'commander';
import { ARCHS, blockNames } from '../models/archs';
import { runStage } from '../train/stage';
import { action, collect, commonOptions, withCommonOptions } from './common';
import { printOutcome } from './outcome';

const BLOCKS_HELP = ARCHS.map((a) => `  ${a.padEnd(15)} ${blockNames(a).join(', ')}`).join('\n');

export function finetuneCommand(): Command {
  const cmd = new Command('finetune')
    .description('fine-tune a pretrained network (--from) on a label level, or train the same architecture from scratch')
    .option('--from <run_dir>', 'a completed pretrain run; its config is the base and its model.* is locked')
    .option('--config <file>', 'YAML config (defaults < source config < file < --set < flags)')
    .option('--level <level>', 'target label level (usually top/coarse)')
    .option('--freeze <n|all>', 'blocks frozen from the input side (inference mode, weights and BN statistics unchanged); all = linear probe')
    .option('--set <key=value>', 'override a config key (repeatable; value parsed as YAML)', collect, [])
    .option('--run-dir <dir>', 'exact output folder (must not exist or be empty)')
    .option('--resume <run_dir>', 'continue a crashed or interrupted run exactly where its checkpoint left it')
    .option('--force', 'with --resume: continue on another backend or thread count (no longer bit-identical)', false)
    .addHelpText('after', `\nBlocks that --freeze N counts, input side first (the dense head is never frozen):\n${BLOCKS_HELP}\n--freeze 2 on cnn-small freezes block1 and block2 and trains block3 and the head.`);
  withCommonOptions(cmd);
  return cmd.action(
    action(async (o: Record<string, unknown>) => {
      const c = commonOptions(o);
      const out = await runStage({
        stage: 'finetune',
        configFile: o.config as string | undefined,
        sets: o.set as string[],
        level: o.level as string | undefined,
        freeze: o.freeze as string | undefined,
        from: o.from as string | undefined,
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
