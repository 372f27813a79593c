import { Command } from 'commander';
import { stageCommand } from './stage';

export function pretrainCommand(): Command {
  const cmd = new Command('pretrain')
    .description('train a network at one level of the class hierarchy and save it to a run folder')
    .option('--level <level>', 'label level: leaf, top|coarse, a level name, depth:N, height:N, nodes:FILE');
  return stageCommand(cmd, 'pretrain');
}
