import { Command } from 'commander';
import { suggestSetForUnknownOptions } from '../src/commands/common';
import { configCommand } from '../src/commands/config';
import { doctorCommand } from '../src/commands/doctor';
import { evalCommand } from '../src/commands/eval';
import { exportCommand } from '../src/commands/export';
import { finetuneCommand } from '../src/commands/finetune';
import { hierarchyCommand } from '../src/commands/hierarchy';
import { importCommand } from '../src/commands/import';
import { pretrainCommand } from '../src/commands/pretrain';
import { quickstartCommand } from '../src/commands/quickstart';
import { reportCommand } from '../src/commands/report';
import { runsCommand } from '../src/commands/runs';
import { sweepCommand } from '../src/commands/sweep';

// Only assembles the commands; each lives in src/commands/<verb>.ts.
const program = new Command('granular')
  .description('transfer-learning experiments across label granularities: pretrain at any level of a class hierarchy, fine-tune on coarse labels, measure')
  .version(require('../../package.json').version)
  .showHelpAfterError('(run with --help for usage)')
  .configureOutput({ outputError: (s, write) => write(`granular: ${s}`) });

for (const cmd of [pretrainCommand(), finetuneCommand(), evalCommand(), hierarchyCommand(), quickstartCommand(), doctorCommand(), sweepCommand(), reportCommand(), runsCommand(), configCommand(), importCommand(), exportCommand()]) {
  program.addCommand(cmd.showHelpAfterError('(run with --help for usage)').configureOutput({ outputError: (s, write) => write(`granular: ${s}`) }));
}
// `--epochs 2` on a command that takes --set: say which --set it means.
for (const cmd of program.commands) if (cmd.options.some((o) => o.long === '--set')) suggestSetForUnknownOptions(cmd);
// commander's own usage errors (unknown option, missing argument) exit 2, as every usage error does.
for (const cmd of [program, ...program.commands]) {
  cmd.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));
}

// Exit when the command is done, even if a backend left worker threads running
// (the threaded wasm build keeps its pool alive).
program.parseAsync(process.argv).then(() => process.exit(process.exitCode ?? 0));
