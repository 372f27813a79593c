import * as path from 'node:path';
import { Command } from 'commander';
import { makeReport } from '../report/report';
import { RunRecord } from '../report/runs';
import { readRunFolder } from '../runs/run';
import { exitQuietlyOnEpipe } from '../util/stdout';
import { nearest, UsageError } from '../util/errors';
import { writeFileAtomic } from '../util/fsx';
import { compareCsv, compareTable, COMPARE_NOTE, pairedComparison, parseCompare } from '../report/compare';
import { TABLE_FORMATS, TableFormat } from '../report/formats';
import { action, collect } from './common';

export function reportCommand(): Command {
  const cmd = new Command('report')
    .description('tables (markdown, CSV) and plots (SVG, PNG) from run folders: mean ± std over seeds per group')
    .argument('<run_dir...>', 'run folders, or folders that hold them (e.g. runs/<sweep-name>)')
    .option('--group-by <key>', 'group by a config key (train.level, finetune.freeze), a summary key (pretrain_level, stage), sweep_stage, or source.<config key> (the source run\'s value); repeatable', collect, [])
    .option('--metric <name>', 'summary metric to tabulate and plot (repeatable; default test_acc, test_acc_easy, test_acc_hard, val_acc; <m>_error = 1 - <m>_acc)', collect, [])
    .option('--where <key=value>', 'only runs whose config or summary key has this value (repeatable), e.g. stage=finetune', collect, [])
    .option('--x <key>', 'x axis of the metric-vs-key plots (default: the first --group-by key other than stage)')
    .option('--out <dir>', 'where to write summary.csv, runs.csv, report.md and the plots (default: <first folder>/report)')
    .option('--no-png', 'write SVG plots only')
    .option('--html', 'also write index.html: the tables (sortable, each run linking to its folder) and the plots inline; opens offline', false)
    .option('--target-level <level>', 'score every run at this level in one test_acc@<level> column (default: the fine-tuning runs\' level, else the coarsest trained)')
    .option('--compare <KEY=A,B>', 'paired comparison: runs that differ only in KEY (same seed and every other setting), mean difference A − B of each --metric with a 95 % t interval, sign test and relative error reduction; repeatable (writes compare.md, compare.csv)', collect, [])
    .option('--format <kind>', 'print the group table paste-ready instead of the markdown one: latex (booktabs), markdown or csv; accuracies in %, also written to <out>/table.tex|md|csv')
    .option('--digits <n>', 'decimals of the percentages in --format output (other metrics get 2 more)', '1')
    .option('--underfit-below <acc>', 'flag rows whose pretraining run reached less than this train_acc_final at its own level', '0.8')
    .addHelpText(
      'after',
      `
Final values come from each run's summary.json; curves (metric vs epoch, dynamics vs step)
from metrics.jsonl. Only completed runs enter the table. Every row names the level its runs
trained at (class count); runs trained at different levels are never averaged together, and
a test_acc@<level> column scores all of them at one level. regime (full, linear probe,
freeze N, gradual (...)) can be grouped by like any key.

  granular report runs/label-granularity --group-by pretrain_level --metric test_acc_hard
  granular report runs/frozen --group-by finetune.freeze --x trainable_params --metric test_error
  granular report runs/label-granularity --html && xdg-open runs/label-granularity/report/index.html
  granular report runs/label-granularity --group-by pretrain_level --format latex --digits 1 > table.tex`,
    );
  return cmd.action(
    action(async (dirs: string[], o: Record<string, unknown>) => {
      exitQuietlyOnEpipe();
      const out = (o.out as string | undefined) ?? defaultOut(dirs[0]);
      const format = o.format as string | undefined;
      if (format !== undefined && !(TABLE_FORMATS as readonly string[]).includes(format)) {
        const guess = nearest(format, TABLE_FORMATS);
        throw new UsageError(`--format '${format}' must be one of ${TABLE_FORMATS.join(', ')}.${guess ? ` Did you mean '${guess}'?` : ''}`);
      }
      const digits = Number(o.digits);
      if (!Number.isInteger(digits) || digits < 0 || digits > 10) throw new UsageError(`--digits '${o.digits}' must be a whole number of decimals from 0 to 10.`);
      // --compare is checked on the runs before any file is written (exit 2 leaves nothing behind).
      const compares = (o.compare as string[]).map(parseCompare);
      const compareMetrics = (o.metric as string[]).length ? (o.metric as string[]) : ['test_acc'];
      let results: Array<ReturnType<typeof pairedComparison>> = [];
      const check = (runs: RunRecord[]) => {
        results = compares.flatMap((c) => compareMetrics.map((m) => pairedComparison(runs, c, m)));
      };
      const r = await makeReport({ check, format: format as TableFormat | undefined, digits, dirs, groupBy: o.groupBy as string[], metrics: o.metric as string[], where: o.where as string[], x: o.x as string | undefined, out, png: o.png !== false, html: Boolean(o.html), targetLevel: o.targetLevel as string | undefined, underfitBelow: underfitBelow(o.underfitBelow as string) });
      // With --format, stdout is the table alone (paste-ready, or '> table.tex'); the rest goes to stderr.
      const info = r.formatted !== null ? process.stderr : process.stdout;
      process.stdout.write(r.formatted ?? r.table + '\n');
      for (const n of r.notes) info.write(`\n${n.replace(/\*\*/g, '')}\n`);
      if (compares.length) {
        const table = compareTable(results);
        writeFileAtomic(path.join(out, 'compare.md'), `# Paired comparisons\n\n${table}\n\n${COMPARE_NOTE}\n`);
        writeFileAtomic(path.join(out, 'compare.csv'), compareCsv(results));
        info.write(`\nPaired comparisons (compare.md):\n${table}\n${COMPARE_NOTE}\n`);
      }
      if (r.excluded.length) process.stderr.write(`report: ${r.excluded.length} run(s) not completed, left out: ${r.excluded.map((x) => x.dir).slice(0, 5).join(', ')}${r.excluded.length > 5 ? ', ...' : ''}\n`);
      const plots = r.files.filter((f) => f.endsWith('.svg')).length;
      info.write(`\n${r.runs.length} runs; wrote ${path.join(out, 'report.md')}, summary.csv, runs.csv${o.html ? ', index.html' : ''} and ${plots} plot${plots === 1 ? '' : 's'} (SVG${o.png !== false ? ' + PNG' : ''}) in ${out}\n`);
      if (o.html) info.write(`open ${path.join(out, 'index.html')} in a browser (works offline)\n`);
      return 0;
    }),
  );
}

/** Beside the runs, never inside a run folder (a run's own folder stays as the run left it). */
function defaultOut(first: string): string {
  const isRun = readRunFolder(first).configText !== null;
  return isRun ? `${first.replace(/\/+$/, '')}-report` : path.join(first, 'report');
}

function underfitBelow(v: string): number {
  const x = Number(v);
  if (!(x >= 0 && x <= 1)) throw new UsageError(`--underfit-below '${v}' must be an accuracy between 0 and 1.`);
  return x;
}
