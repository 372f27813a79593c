import { Command } from 'commander';
import { ARCHS, blockNames } from '../models/archs';
import { stageCommand } from './stage';

const BLOCKS_HELP = ARCHS.map((a) => `  ${a.padEnd(15)} ${blockNames(a).join(', ')}`).join('\n');

export function finetuneCommand(): Command {
  const cmd = new Command('finetune')
    .description('fine-tune a pretrained network (--from) on a label level, or train the same architecture from scratch')
    .option('--from <run_dir>', 'a completed pretrain run; its config is the base and its model.* is locked')
    .option('--level <level>', 'target label level (usually top/coarse)')
    .option('--freeze <n|all>', 'blocks frozen from the input side (inference mode, weights and BN statistics unchanged); all = linear probe')
    .addHelpText('after', `\nBlocks that --freeze N counts, input side first (the dense head is never frozen):\n${BLOCKS_HELP}\n--freeze 2 on cnn-small freezes block1 and block2 and trains block3 and the head.`);
  return stageCommand(cmd, 'finetune');
}
