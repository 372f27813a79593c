import * as path from 'node:path';
import { checkEvalApplies } from '../config/checks';
import { parseSets, readConfigFile, resolveConfig } from '../config/load';
import { tagLayer } from '../config/provenance';
import { Config } from '../config/schema';
import { FINETUNE_DEFAULT_LEVEL, levelSpecs, namesLevel, primaryLevelSpec } from '../config/stage-level';
import { checkFinetuneSettings, headRequest } from '../train/finetune';
import { loadCatalog, loadDataset } from '../data';
import { transformCatalog } from '../data/catalog';
import { Hierarchy } from '../hierarchy/tree';
import { blockNames } from '../models/archs';
import { UsageError } from '../util/errors';
import type { LoadedSweep } from './sweep-run';
import { PlannedRun } from './sweep-plan';

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
    const where = `sweep file '${s.file}', run '${r.name}' (stage ${r.stage})`;
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
      } else {
        own = [base, setsLayer(r.settings)];
        cfg = resolveConfig(own, `run '${r.name}'`);
      }
      if (r.command === 'finetune' && !own.some(namesLevel)) cfg.train.level = FINETUNE_DEFAULT_LEVEL;
      resolved.set(r.name, cfg);
      checkEvalApplies(cfg);
      checkFinetuneSettings(cfg, r.command, cfg.model.arch, blockNames(cfg.model.arch));
      const key = JSON.stringify({ data: cfg.data, ood: cfg.eval.ood_synthetic });
      if (!hierarchies.has(key)) hierarchies.set(key, hierarchyOf(cfg));
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
      if (e instanceof UsageError) throw new UsageError(`${where}: ${e.message}\nNothing was run. Fix the sweep file (or its base config), then run the sweep again.`);
      throw e;
    }
  }
  return out;
}

/** The class hierarchy the run's data gives, without decoding any image. */
async function hierarchyOf(cfg: Config): Promise<Hierarchy> {
  if (cfg.data.format === 'synthetic') return (await loadDataset(cfg, () => undefined)).hierarchy;
  return transformCatalog(loadCatalog(cfg, () => undefined), cfg).hierarchy;
}
