import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, Option } from 'commander';
import { checkEvalApplies } from '../config/checks';
import { configToYaml, parseSets, resolveConfig } from '../config/load';
import { tagLayer } from '../config/provenance';
import { loadDataset } from '../data';
import { applyNormalization, inputNormalization } from '../data/labels/normalize';
import { splitFromRecord } from '../data/labels/split';
import { initEngine } from '../engine';
import { coarserLevels } from '../hierarchy/tree';
import { oodMetrics } from '../measure/ood';
import { evalBatchSize } from '../measure/predict';
import { buildNetwork } from '../models/archs';
import { claimEvalDir, FILES } from '../runs/rundir';
import { alignmentMetrics, evaluate } from '../measure/evaluate';
import { loadRunWeights, readSourceRun, readSplitRecord } from '../runs/run';
import { headsOfRun, resolveTrainLevels } from '../train/heads';
import { UsageError } from '../util/errors';
import { writeFileAtomic, writeJsonAtomic } from '../util/fsx';
import { action, collect, commonOptions, withCommonOptions } from './common';

/**
 * Evaluate a finished run again (e.g. with OOD shifts it was not trained with)
 * into RUN_DIR/eval/<time>/; the run itself is never changed.
 */
export function evalCommand(): Command {
  const cmd = new Command('eval')
    .description('evaluate a completed run (test metrics at every level, alignment, OOD) into RUN_DIR/eval/<time>/ without changing the run')
    .argument('<run_dir>', 'a completed pretrain or finetune run')
    .addOption(new Option('--weights <which>', 'which saved network to score: last (RUN_DIR/model, the last epoch) or best (RUN_DIR/model-best, the epoch with the best val_acc)').choices(['last', 'best']).default('last'))
    .option('--set <key=value>', 'override eval.* keys, e.g. --set "eval.ood_synthetic=[more_noise]"', collect, [])
    .option('--json', 'print the result on stdout as one JSON object, for scripts', false);
  withCommonOptions(cmd);
  return cmd.action(
    action(async (runDir: string, o: Record<string, unknown>) => {
      const c = commonOptions(o);
      const sets = o.set as string[];
      const bad = sets.filter((s) => !s.trim().startsWith('eval.'));
      if (bad.length) throw new UsageError(`granular eval only takes eval.* overrides (the run's data, model and training are fixed); got: ${bad.join(', ')}`);
      const overrides = parseSets(sets);
      const run = readSourceRun(runDir, `RUN_DIR '${runDir}'`, "Give the folder of a completed 'granular pretrain' or 'granular finetune' run.");
      // An imported checkpoint (granular import) has weights but no dataset or split of its own to evaluate on.
      if ((run.meta as { external?: unknown }).external !== undefined) {
        throw new UsageError(`'${runDir}' is an imported checkpoint (${String(run.summary.level ?? 'external')}): it has no data split to evaluate on. Fine-tune it on your data first: granular finetune --from '${runDir}' --config YOUR_DATA.yaml, then granular eval on that run.`);
      }
      const cfg = resolveConfig([tagLayer(run.cfg as unknown as Record<string, unknown>, `${runDir}/config.yaml`), overrides]);
      checkEvalApplies(cfg, `run '${runDir}'`);
      const weights = o.weights as 'last' | 'best';
      const folder = weights === 'best' ? FILES.modelBest : FILES.model;
      if (weights === 'best' && !fs.existsSync(path.join(runDir, folder))) throw new UsageError(noBestModel(runDir, cfg.data.val_fraction, run.summary));
      const engine = await initEngine(c.backend, c.threads);
      const data = await loadDataset(cfg);
      const trained = resolveTrainLevels(data.hierarchy, cfg);
      const level = trained.levels[0];
      const heads = headsOfRun(run.summary, data.hierarchy, trained);
      const split = splitFromRecord(data, readSplitRecord(runDir), runDir);
      applyNormalization(data, inputNormalization(cfg, data, split));
      const net = buildNetwork(cfg, data.shape, heads.headClasses, { extraHeads: heads.extra.map((e) => ({ level: e.level.name, numClasses: e.level.classes.length })) });
      try {
        loadRunWeights(net, runDir, folder);
        const metrics = {
          ...(await evaluate({ net, data, split, level, coarser: coarserLevels(data.hierarchy, level), heads, batch: evalBatchSize(cfg) })),
          ...(await alignmentMetrics(net, data, cfg.data.seed)),
          ...(await oodMetrics(cfg, net, data, split, level, heads)),
        };
        // Claimed atomically: evaluations that end in the same second get -2, -3, ...
        const out = claimEvalDir(runDir);
        writeFileAtomic(path.join(out, FILES.config), configToYaml(cfg, `config of this evaluation of ${run.meta.run_id}`));
        writeFileAtomic(path.join(out, FILES.command), ['granular', ...process.argv.slice(2)].join(' ') + '\n');
        // Which saved network was scored: `weights` (last|best), its folder, and for best the epoch it holds.
        const scored = { weights, weights_dir: folder, ...(weights === 'best' && typeof run.summary.best_epoch === 'number' ? { best_epoch: run.summary.best_epoch } : {}) };
        writeJsonAtomic(path.join(out, FILES.summary), { status: 'completed', run_id: run.meta.run_id, level: level.name, ...scored, backend: engine.backend, evaluated_at: new Date().toISOString(), ...metrics });
        const f = (k: string) => (typeof metrics[k as keyof typeof metrics] === 'number' ? ` ${k}=${(metrics[k as keyof typeof metrics] as number).toFixed(4)}` : '');
        if (o.json) process.stdout.write(JSON.stringify({ status: 'completed', eval_dir: out, run_dir: runDir, level: level.name, ...scored, ...metrics }) + '\n');
        else process.stdout.write(`evaluated ${out} (${folder}/)${f('test_acc')}${f('test_acc_hard')}${f('ood_acc')}\n`);
        return 0;
      } finally {
        net.dispose();
      }
    }),
  );
}

/**
 * Why `eval --weights best` cannot run: the run has no model-best/, which is
 * written only when an epoch's val_acc was measured (train/loop-parts.ts
 * BestEpoch). `valFraction`: the run's data.val_fraction.
 */
function noBestModel(runDir: string, valFraction: number, summary: Record<string, unknown>): string {
  const why =
    valFraction === 0
      ? 'it was trained with data.val_fraction=0, so it had no validation set and no epoch was selected by val_acc'
      : summary.epochs_trained === 0
        ? 'it trained 0 epochs, so no epoch was selected by val_acc'
        : 'no epoch of it measured val_acc (it may come from an older granular, or its model-best/ was removed)';
  return `run '${runDir}' has no ${FILES.modelBest}/: ${why}. Score its last epoch with --weights last (the default); for a best epoch, train with data.val_fraction > 0 (early stopping: train.early_stop).`;
}
