import * as path from 'node:path';
import { Command } from 'commander';
import { checkEvalApplies } from '../config/checks';
import { configToYaml, parseSets, resolveConfig } from '../config/load';
import { tagLayer } from '../config/provenance';
import { loadDataset } from '../data';
import { applyNormalization, inputNormalization } from '../data/normalize';
import { splitFromRecord } from '../data/split';
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
      const engine = await initEngine(c.backend, c.threads);
      const data = await loadDataset(cfg);
      const trained = resolveTrainLevels(data.hierarchy, cfg);
      const level = trained.levels[0];
      const heads = headsOfRun(run.summary, data.hierarchy, trained);
      const split = splitFromRecord(data, readSplitRecord(runDir), runDir);
      applyNormalization(data, inputNormalization(cfg, data, split));
      const net = buildNetwork(cfg, data.shape, heads.headClasses, { extraHeads: heads.extra.map((e) => ({ level: e.level.name, numClasses: e.level.classes.length })) });
      try {
        loadRunWeights(net, runDir);
        const metrics = {
          ...(await evaluate({ net, data, split, level, coarser: coarserLevels(data.hierarchy, level), heads, batch: evalBatchSize(cfg) })),
          ...(await alignmentMetrics(net, data, cfg.data.seed)),
          ...(await oodMetrics(cfg, net, data, split, level, heads)),
        };
        // Claimed atomically: evaluations that end in the same second get -2, -3, ...
        const out = claimEvalDir(runDir);
        writeFileAtomic(path.join(out, FILES.config), configToYaml(cfg, `config of this evaluation of ${run.meta.run_id}`));
        writeFileAtomic(path.join(out, FILES.command), ['granular', ...process.argv.slice(2)].join(' ') + '\n');
        writeJsonAtomic(path.join(out, FILES.summary), { status: 'completed', run_id: run.meta.run_id, level: level.name, backend: engine.backend, evaluated_at: new Date().toISOString(), ...metrics });
        const f = (k: string) => (typeof metrics[k as keyof typeof metrics] === 'number' ? ` ${k}=${(metrics[k as keyof typeof metrics] as number).toFixed(4)}` : '');
        if (o.json) process.stdout.write(JSON.stringify({ status: 'completed', eval_dir: out, run_dir: runDir, level: level.name, ...metrics }) + '\n');
        else process.stdout.write(`evaluated ${out}${f('test_acc')}${f('test_acc_hard')}${f('ood_acc')}\n`);
        return 0;
      } finally {
        net.dispose();
      }
    }),
  );
}
