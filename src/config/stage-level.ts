import { Config } from './schema';

/**
 * Which level a stage trains at when nobody says (DESIGN.md "Which config a
 * run uses"): `finetune` exists to train on the coarse target, so unless
 * --level, --set train.level or its own --config names a level it trains at
 * `top`; it never inherits the level of the run it starts from.
 */
export const FINETUNE_DEFAULT_LEVEL = 'top';

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Whether a config layer (a --config file, --set items, flags) names train.level. */
export function namesLevel(layer: unknown): boolean {
  return isObj(layer) && isObj(layer.train) && layer.train.level !== undefined;
}

/** train.level as a list of specs (a single level is a list of one). */
export function levelSpecs(level: Config['train']['level']): string[] {
  return Array.isArray(level) ? level : [level];
}

/** The level a run is scored at: the first (finest) listed level. */
export function primaryLevelSpec(level: Config['train']['level']): string {
  return levelSpecs(level)[0];
}
