import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { initEngine } from '../engine';
import { runStage, StageOutcome, StageRequest } from '../train/stage';
import { timestamp } from '../runs/rundir';
import { UsageError } from '../util/errors';
import { claimNewDir } from '../util/fsx';
import { action, collect, commonOptions, withCommonOptions } from './common';
import { configFileList } from '../config/load';
import { formatTable } from './hierarchy';

/** The embedded default config, found beside the installed package. */
export const QUICKSTART_CONFIG = path.join(__dirname, '..', '..', '..', 'configs', 'quickstart.yaml');

/** Fine-tuning settings of the story (each run's command.txt records them). */
const FINETUNE_SETS = ['train.epochs=10', 'train.lr=0.5'];

export interface StoryRow {
  seed: number;
  pretrain: string;
  regime: string;
  runDir: string;
  summary: Record<string, unknown>;
}

/**
 * The whole story on one config: pretrain at the finest and the coarsest level,
 * fine-tune both on the coarsest level as a linear probe and fully (new head),
 * plus the from-scratch baseline; one table at the end.
 */
export async function runStory(opts: { config: string | readonly string[]; seeds: number[]; out: string; backend: StageRequest['backend']; threads?: number; quiet: boolean; extraSets?: string[]; log?: (s: string) => void }): Promise<StoryRow[]> {
  const log = opts.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const rows: StoryRow[] = [];
  const base = { backend: opts.backend, threads: opts.threads, quiet: opts.quiet, silent: true, configFile: opts.config };
  const must = (o: StageOutcome) => {
    if (o.exitCode !== 0) throw new Error(`run ${o.runDir} ended with status ${o.summary.status}: ${o.summary.error ?? ''}`);
    return o;
  };
  for (const seed of opts.seeds) {
    const dir = path.join(opts.out, `seed${seed}`);
    const seedSet = [`seed=${seed}`, ...(opts.extraSets ?? [])];
    const stage = async (r: Omit<StageRequest, 'backend' | 'quiet' | 'argv' | 'configFile'>) => {
      const argv = ['granular', r.stage, ...configFileList(opts.config).flatMap((f) => ['--config', f]), ...(r.from ? ['--from', r.from] : []), ...(r.level ? ['--level', r.level] : []), ...(r.freeze ? ['--freeze', r.freeze] : []), ...r.sets.flatMap((s) => ['--set', s]), '--run-dir', r.runDir!];
      log(`$ ${argv.join(' ')}`);
      return must(await runStage({ ...base, ...r, argv }));
    };
    for (const level of ['leaf', 'top']) {
      const pre = await stage({ stage: 'pretrain', level, sets: seedSet, runDir: path.join(dir, `pretrain-${level}`) });
      for (const [regime, freeze] of [['linear probe', 'all'], ['full fine-tune', '0']]) {
        const ft = await stage({ stage: 'finetune', from: pre.runDir, level: 'top', freeze, sets: [...seedSet, ...FINETUNE_SETS], runDir: path.join(dir, `finetune-${level}-freeze${freeze}`) });
        rows.push({ seed, pretrain: String(pre.summary.level), regime, runDir: ft.runDir, summary: { ...ft.summary, align_fine: pre.summary.align_fine, align_random: pre.summary.align_random, align_common: pre.summary.align_common } });
      }
    }
    const scratch = await stage({ stage: 'finetune', level: 'top', sets: [...seedSet, ...FINETUNE_SETS], runDir: path.join(dir, 'finetune-scratch') });
    rows.push({ seed, pretrain: 'scratch', regime: 'from scratch', runDir: scratch.runDir, summary: scratch.summary });
  }
  return rows;
}

const pct = (v: unknown) => (typeof v === 'number' && !Number.isNaN(v) ? (100 * v).toFixed(1) : '-');
const f3 = (v: unknown) => (typeof v === 'number' && !Number.isNaN(v) ? v.toFixed(3) : '-');

/** Mean over seeds per (pretraining level, regime); per-seed values beside it when there are several. */
export function storyTable(rows: StoryRow[]): string {
  const groups = new Map<string, StoryRow[]>();
  for (const r of rows) {
    const k = `${r.pretrain}\u0000${r.regime}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(r);
  }
  const multi = new Set(rows.map((r) => r.seed)).size > 1;
  const mean = (rs: StoryRow[], key: string) => {
    const v = rs.map((r) => r.summary[key]).filter((x): x is number => typeof x === 'number' && !Number.isNaN(x));
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
  };
  const cell = (rs: StoryRow[], key: string) => pct(mean(rs, key)) + (multi ? ` (${rs.map((r) => pct(r.summary[key])).join('/')})` : '');
  const table = [['pretraining level', 'regime', 'test acc %', 'easy acc %', 'hard acc %', 'align_fine', 'align_random']];
  for (const rs of groups.values()) {
    table.push([rs[0].pretrain, rs[0].regime, cell(rs, 'test_acc'), cell(rs, 'test_acc_easy'), cell(rs, 'test_acc_hard'), f3(mean(rs, 'align_fine')), f3(mean(rs, 'align_random'))]);
  }
  return formatTable(table);
}

export function quickstartCommand(): Command {
  const cmd = new Command('quickstart')
    .description('the whole story on the embedded default: pretrain fine vs coarse, linear probe and full fine-tuning on the coarse level, from scratch; prints one table')
    .option('--config <file>', `config to tell the story on (default ${QUICKSTART_CONFIG}); repeatable: files compose in order, a later one overriding an earlier one`, collect, [])
    .option('--seeds <list>', 'comma-separated seeds', '0')
    .option('--out <dir>', 'folder for the runs (default runs/quickstart-<time>)');
  withCommonOptions(cmd);
  return cmd.action(
    action(async (o: Record<string, unknown>) => {
      const c = commonOptions(o);
      const seeds = String(o.seeds).split(',').map((s) => Number(s.trim()));
      if (seeds.some((s) => !Number.isInteger(s))) throw new UsageError(`--seeds '${o.seeds}' must be comma-separated integers, e.g. 0,1,2.`);
      const configs = (o.config as string[]).length ? (o.config as string[]) : [QUICKSTART_CONFIG];
      for (const f of configs) if (!fs.existsSync(f)) throw new UsageError(`config '${f}' not found.`);
      // The default folder is named to the second: claimed atomically (-2, -3, ... when taken).
      const out = (o.out as string | undefined) ?? claimNewDir(path.join('runs', `quickstart-${timestamp()}`));
      const engine = await initEngine(c.backend, c.threads);
      // npm start is the first thing a new user runs: say once how to make it faster.
      if (engine.advice) process.stderr.write(`granular: ${engine.advice}\n`);
      const t0 = Date.now();
      const rows = await runStory({ config: configs, seeds, out, ...c, quiet: true });
      process.stdout.write(`\nFine vs coarse pretraining, fine-tuned on the coarsest level (${seeds.length > 1 ? `mean over seeds ${seeds.join(', ')}, per seed in brackets` : `seed ${seeds[0]}`}):\n\n`);
      process.stdout.write(storyTable(rows) + '\n\n');
      process.stdout.write(`hard = test samples showing only their leaf's features (none of the coarser levels'); align_* from the pretrained filters (align_random = chance level).\n`);
      process.stdout.write(`runs in ${out}/ (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
      return 0;
    }),
  );
}
