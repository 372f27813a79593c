import * as path from 'node:path';
import { checkEvalApplies } from '../config/checks';
import { parseConfigYaml, parseSets, readConfigFile, resolveConfig } from '../config/load';
import { tagLayer } from '../config/provenance';
import { Config } from '../config/schema';
import { FINETUNE_DEFAULT_LEVEL, levelSpecs, namesLevel, primaryLevelSpec } from '../config/stage-level';
import { checkFinetuneSettings, headRequest } from '../train/finetune';
import { loadCatalog, loadDataset } from '../data';
import { transformCatalog } from '../data/cache/catalog';
import { clusterSplit } from '../hierarchy/transform';
import { Hierarchy } from '../hierarchy/tree';
import { blockNames } from '../models/archs';
import { readRunFolder, readSourceRun } from '../runs/run';
import { UsageError } from '../util/errors';
import type { LoadedSweep } from './run';
import { PlannedRun } from './plan';

type Obj = Record<string, unknown>;

/** What a planned run will train: its resolved config and the level it trains at. */
export interface CheckedRun {
  run: PlannedRun;
  cfg: Config;
  level: string;
  classes: number;
}

const setsLayer = (settings: ReadonlyArray<[string, unknown]>) => parseSets(settings.map(([k, v]) => `${k}=${JSON.stringify(v)}`));

/**
 * Resolve and validate every run of a sweep before the first one starts (and
 * for --dry-run and --emit): its config as the command will build it, the
 * level against the data's hierarchy (read without decoding an image), at
 * least two classes there, --freeze against the architecture's blocks, and
 * settings that do not apply to the data. Any problem is a UsageError naming
 * the run and its stage: the sweep exits 2 with nothing run.
 */
export async function checkSweepRuns(s: LoadedSweep, cwd = process.cwd()): Promise<CheckedRun[]> {
  const base: Obj = s.base ? readConfigFile(path.resolve(cwd, s.base)) : {};
  const byName = new Map(s.plan.runs.map((r) => [r.name, r]));
  const resolved = new Map<string, Config>();
  const hierarchies = new Map<string, Promise<Hierarchy>>();
  const out: CheckedRun[] = [];
  for (const r of s.plan.runs) {
    const where = `${s.where}, run '${r.name}' (stage ${r.stage})`;
    try {
      let cfg: Config;
      let own: Obj[];
      if (r.from) {
        // A chained run starts from its source's config (its config.yaml), then its own --set items.
        const src = resolved.get(r.from)!;
        own = [setsLayer(r.settings.slice(byName.get(r.from)!.settings.length))];
        cfg = resolveConfig([tagLayer(structuredClone(src) as unknown as Obj, `the config of '${r.from}'`), ...own], `run '${r.name}'`);
        const locked = Object.keys(src.model).find((k) => JSON.stringify((src.model as Obj)[k]) !== JSON.stringify((cfg.model as Obj)[k]));
        if (locked) throw new UsageError(`model.${locked} is locked by its source run '${r.from}'.`);
      } else if (r.source) {
        // A run folder outside the sweep (from_run:, multirun --from): its config, then base:, then the run's own
        // settings, as 'granular finetune --from DIR --config BASE --set ...' layers them.
        const src = readSourceRun(path.resolve(cwd, r.source), s.file === null ? `--from '${r.source}'` : `from_run '${r.source}'`, 'Give the folder of a completed pretrain or finetune run.');
        own = [base, setsLayer(r.settings)];
        cfg = resolveConfig([tagLayer(structuredClone(src.cfg) as unknown as Obj, `the config of '${r.source}'`), ...own], `run '${r.name}'`);
        const locked = Object.keys(src.cfg.model).find((k) => JSON.stringify((src.cfg.model as Obj)[k]) !== JSON.stringify((cfg.model as Obj)[k]));
        if (locked) throw new UsageError(`model.${locked} is locked by its source run '${r.source}'.`);
      } else {
        own = [base, setsLayer(r.settings)];
        cfg = resolveConfig(own, `run '${r.name}'`);
      }
      if (r.command === 'finetune' && !own.some(namesLevel)) cfg.train.level = FINETUNE_DEFAULT_LEVEL;
      resolved.set(r.name, cfg);
      checkEvalApplies(cfg);
      checkFinetuneSettings(cfg, r.command, cfg.model.arch, blockNames(cfg.model.arch));
      const key = JSON.stringify({ data: cfg.data, ood: cfg.eval.ood_synthetic });
      if (!hierarchies.has(key)) hierarchies.set(key, hierarchyOf(cfg, clusterSourceLevel(cfg, s, resolved, cwd)));
      // Multi-level training (train.level as a list): every listed level must exist; the first is the run's level.
      const h = await hierarchies.get(key)!;
      for (const spec of levelSpecs(cfg.train.level)) h.resolveLevel(spec);
      const level = h.resolveLevel(primaryLevelSpec(cfg.train.level));
      if (level.classes.length < 2) throw new UsageError(`level '${cfg.train.level}' has only ${level.classes.length} class; training needs at least 2.`);
      if (r.from && headRequest(cfg).head === 'keep') {
        const src = out.find((c) => c.run.name === r.from)!;
        if (src.classes !== level.classes.length) throw new UsageError(`finetune.head=keep needs as many classes as the source's head (${src.classes}); level '${cfg.train.level}' has ${level.classes.length}.`);
      }
      out.push({ run: r, cfg, level: level.name, classes: level.classes.length });
    } catch (e) {
      if (e instanceof UsageError) throw new UsageError(`${where}: ${e.message}\nNothing was run. Fix ${s.file === null ? 'the command (or its --config file), then run it' : 'the sweep file (or its base config), then run the sweep'} again.`);
      throw e;
    }
  }
  return out;
}

/**
 * The class hierarchy the run's data gives, without decoding any image. With
 * `data.relabel: cluster:K` the pseudo-classes come from k-means on a trained
 * network's features, but the tree's shape does not: each class of
 * `clusterLevel` (the level the data.relabel_from run trains at) gets K
 * children on a level named `cluster` (hierarchy/transform.ts clusterSplit).
 */
async function hierarchyOf(cfg: Config, clusterLevel: string | null): Promise<Hierarchy> {
  // The data's own hierarchy: the clustering itself needs the source's features, which may not exist yet.
  const own: Config = clusterLevel === null ? cfg : { ...cfg, data: { ...cfg.data, relabel: null, relabel_from: null } };
  const h = own.data.format === 'synthetic' ? (await loadDataset(own, () => undefined)).hierarchy : transformCatalog(loadCatalog(own, () => undefined), own).hierarchy;
  if (clusterLevel === null) return h;
  const k = Number(cfg.data.relabel!.split(':')[1]);
  return clusterSplit(h, h.resolveLevel(clusterLevel), k).hierarchy;
}

/**
 * For a `data.relabel: cluster:K` run, the level its data.relabel_from run
 * trains at: from that folder's config.yaml, or, when an earlier run of this
 * sweep will write the folder, from that run's resolved config. Null for any
 * other run. UsageError when neither exists.
 */
function clusterSourceLevel(cfg: Config, s: LoadedSweep, resolved: ReadonlyMap<string, Config>, cwd: string): string | null {
  if (!cfg.data.relabel?.startsWith('cluster:')) return null;
  if (!cfg.data.relabel_from) throw new UsageError(`data.relabel ${cfg.data.relabel} needs data.relabel_from: the folder of the run whose features are clustered.`);
  const dir = path.resolve(cwd, cfg.data.relabel_from);
  const planned = s.plan.runs.find((r) => path.resolve(cwd, s.runsDir, r.name) === dir && resolved.has(r.name));
  if (planned) return primaryLevelSpec(resolved.get(planned.name)!.train.level);
  const text = readRunFolder(dir).configText;
  if (text !== null) return primaryLevelSpec(parseConfigYaml(text, path.join(dir, 'config.yaml')).train.level);
  throw new UsageError(`data.relabel_from '${cfg.data.relabel_from}' is not a run folder, and no earlier run of this sweep writes it. Name the folder of a finished run, or a run of an earlier stage (runs/<sweep>/<run name>).`);
}
