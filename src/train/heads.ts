/**
 * The heads of a run and what they are trained on: one head per trained level
 * (multi-level training), where each head's weights come from (a new head, the
 * source's head kept, or the source's finer head coarsened), the seed of a new
 * head, and the objective a training step minimises. Pure decisions on
 * configs and levels, made once per run before anything is written.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Config } from '../config/schema';
import { levelSpecs, primaryLevelSpec } from '../config/stage-level';
import type { HeadRequest } from './finetune';
import { coarsening, Hierarchy, Level } from '../hierarchy/tree';
import { extraHeadName } from '../models/network';
import { coarsenedObjective, multiLevelObjective, Objective, plainObjective, semanticSoftmaxObjective } from '../models/objective';
import { UsageError } from '../util/errors';
import { Rng } from '../util/rng';

/** A run's level as it is named in summary.json and reports: `item`, or `item+kind+group` for a multi-level run. */
export function levelsName(levels: readonly Level[]): string {
  return levels.map((l) => l.name).join('+');
}

export interface TrainLevels {
  /** Every trained level, the primary (finest) first. */
  levels: Level[];
  /** For each level, the map from the primary level's classes to its classes (the first is the identity). */
  maps: Int32Array[];
  /** Loss weight of each level: multi_head normalises them to sum 1; semantic_softmax uses Ridnik et al.'s (semanticSoftmaxWeights). */
  weights: number[];
  /** How several levels train (train.multi_level); single-level runs: multi_head. */
  mode: 'multi_head' | 'semantic_softmax';
}

/**
 * Semantic softmax's level at depth d (Ridnik et al. 2021): the nodes at
 * exactly depth d above the dataset's classes, each class mapped to its
 * ancestor at depth d, or -1 when the class is shallower than d (its images
 * are masked out of that softmax). `cut`: the depth cut at d, whose name
 * and spec it keeps.
 */
export function exactDepthLevel(h: Hierarchy, cut: Level, d: number): Level {
  const keep = cut.classes.filter((c) => h.node(c).depth === d);
  const index = new Map(keep.map((c, i) => [c, i]));
  const classOf = Int32Array.from(cut.classOf, (v) => (v < 0 ? -1 : index.get(cut.classes[v]) ?? -1));
  return { name: cut.name, spec: cut.spec, classes: keep, classOf, droppedClasses: classOf.filter((v) => v < 0).length };
}

/**
 * Ridnik et al. 2021's weight of each semantic-softmax level (their
 * `normalization_factor_list`): with n_k the classes of level k, levels
 * ordered from the coarsest, W_k = min(20, sum_j n_j / sum_{j >= k} n_j):
 * finer levels, which fewer classes and images reach, weigh more; the
 * coarsest weighs 1. Not normalised. `counts` in any order; the result
 * follows it.
 */
export function semanticSoftmaxWeights(counts: readonly number[], depths: readonly number[]): number[] {
  const total = counts.reduce((a, b) => a + b, 0);
  return counts.map((_, k) => {
    const atOrBelow = counts.reduce((a, n, j) => a + (depths[j] >= depths[k] ? n : 0), 0);
    return Math.min(20, total / atOrBelow);
  });
}

/**
 * Resolve train.level (a spec or a list of specs) on a hierarchy. A list is
 * multi-level training: its first level is the finest and every other level
 * must be a coarsening of it (so each head's labels follow from the first
 * level's); train.level_weights, if given, has one positive weight per level.
 * UsageError otherwise, naming the level and what to do.
 */
export function resolveTrainLevels(h: Hierarchy, cfg: Config): TrainLevels {
  const specs = levelSpecs(cfg.train.level);
  const semantic = specs.length > 1 && cfg.train.multi_level === 'semantic_softmax';
  const cuts = specs.map((s) => h.resolveLevel(s));
  const primary = cuts[0];
  const depthOf = (l: Level) => Math.max(...l.classes.map((c) => h.node(c).depth));
  if (semantic && cfg.train.loss !== 'xent') throw new UsageError(`train.multi_level=semantic_softmax is a softmax cross-entropy per depth; train.loss is '${cfg.train.loss}'. Set train.loss=xent.`);
  // Semantic softmax: every listed level after the first is a depth of the tree, trained over the classes at exactly that depth.
  const levels = cuts.map((l, i) => (semantic && i > 0 ? exactDepthLevel(h, l, depthOf(l)) : l));
  const names = new Set<string>();
  const maps = levels.map((l, i) => {
    if (semantic && i > 0 && l.classes.length < 2) {
      throw new UsageError(`train.multi_level=semantic_softmax: level '${specs[i]}' has ${l.classes.length} class(es) at depth ${depthOf(cuts[i])}; a softmax over fewer than 2 classes learns nothing (Ridnik et al. drop such depths). Remove it from train.level.`);
    }
    if (names.has(l.name)) throw new UsageError(`train.level lists level '${l.name}' twice (${JSON.stringify(specs)}); list each level once.`);
    names.add(l.name);
    if (i === 0) return Int32Array.from(l.classes, (_, j) => j);
    const m = semantic ? partialCoarsening(primary, l, depthOf(l) < depthOf(primary)) : coarsening(primary, l);
    if (!m) throw new UsageError(`train.level: '${specs[i]}' is not coarser than '${specs[0]}' (${l.classes.length} vs ${primary.classes.length} classes, or a class of '${specs[0]}' straddles two of it). List the finest level first, then coarser ones.`);
    return m;
  });
  const w = cfg.train.level_weights;
  if (w !== null && w.length !== levels.length) throw new UsageError(`train.level_weights has ${w.length} weight(s) for ${levels.length} level(s) in train.level; give one per level.`);
  if (w !== null && levels.length === 1) throw new UsageError('train.level_weights weights the heads of multi-level training; train.level names a single level. Remove it, or list several levels.');
  if (semantic) {
    return { levels, maps, weights: w ?? semanticSoftmaxWeights(levels.map((l) => l.classes.length), levels.map(depthOf)), mode: 'semantic_softmax' };
  }
  const raw = w ?? levels.map(() => 1);
  const total = raw.reduce((a, b) => a + b, 0);
  return { levels, maps, weights: raw.map((x) => x / total), mode: 'multi_head' };
}

/**
 * For each class of `fine`, its class in the exact-depth level `coarse`, or
 * -1 when it has none there (a class shallower than that depth: masked), or
 * null if `coarse` is not strictly coarser or a fine class straddles two of
 * its classes.
 */
function partialCoarsening(fine: Level, coarse: Level, coarser: boolean): Int32Array | null {
  if (!coarser) return null;
  const map = new Int32Array(fine.classes.length).fill(-2);
  for (let i = 0; i < fine.classOf.length; i++) {
    const f = fine.classOf[i];
    if (f < 0) continue;
    const c = coarse.classOf[i];
    if (map[f] === -2) map[f] = c;
    else if (map[f] !== c) return null;
  }
  return map.map((v) => (v === -2 ? -1 : v));
}

/**
 * The seed of a fine-tuning run's new head: drawn from a stream of its own
 * (train.seed and a fixed stream number), never from the stream that
 * initialises the architecture, so a "new" head is not the head the source
 * run started from when the class counts match (issue 15, item 0).
 */
export function finetuneHeadSeed(trainSeed: number): number {
  return 1 + (new Rng(trainSeed, 0x4ead).uint32() % 2147483646);
}

export interface HeadPlan {
  /** What finetune.head does in this run (pretraining runs: new). */
  head: 'new' | 'keep' | 'coarsen';
  /** Classes of the primary head (the source level's when coarsening; else the run's level). */
  headClasses: number;
  /** Classes of the run's (primary) level: what predictions are scored at. */
  runClasses: number;
  /** Coarsen: the run-level class of each primary head class; null otherwise. */
  headMap: Int32Array | null;
  /** Heads of the other trained levels (multi-level), with the map from primary-level classes and their loss weight. */
  extra: Array<{ level: Level; map: Int32Array; weight: number }>;
  /** Loss weight of the primary head. */
  primaryWeight: number;
  /** How the heads of a multi-level run train (train.multi_level). */
  mode: TrainLevels['mode'];
  /** Seed of a new primary head; null = the architecture's own seed stream (pretraining, as before). */
  headSeed: number | null;
  /** The source's weight name prefix loaded into the primary head (`head`, `head_kind`); null = a new head. */
  sourceHead: string | null;
  /** The source level whose head is kept or coarsened (its canonical name), or null. */
  sourceLevel: string | null;
}

/** The source run as heads need it: its config and the names of its trained levels. */
export interface HeadSource {
  cfg: Config;
  dir: string;
  /**
   * The classes (paths) of the source's level `name` as its hierarchy.json
   * recorded them, in head order (`exactDepth`: only the deepest ones, a
   * semantic-softmax head); undefined when not recorded.
   */
  levelClasses?: (name: string, exactDepth: boolean, datasetClasses: readonly string[]) => RecordedLevel | undefined;
}

/** A source level as its hierarchy.json recorded it: each class's path, with ' <- ' and the label indices of its dataset classes when `withMembers`. */
export interface RecordedLevel {
  classes: string[];
  withMembers: boolean;
}

/**
 * HeadSource.levelClasses from a run folder's hierarchy.json: the classes of
 * level `name` in head order (`exactDepth`: only the deepest ones, a
 * semantic-softmax head); each with the dataset classes under it when the
 * run's dataset classes are `datasetClasses` (so a relabelled hierarchy with
 * the same class names, e.g. shuffle_parents, does not pass for the same).
 */
export function recordedLevelClasses(dir: string): NonNullable<HeadSource['levelClasses']> {
  return (name, exactDepth, datasetClasses) => {
    let rec: { classes?: string[]; levels?: Array<{ name: string; classes: string[]; class_of: number[] }> };
    try {
      rec = JSON.parse(fs.readFileSync(path.join(dir, 'hierarchy.json'), 'utf8'));
    } catch {
      return undefined;
    }
    const level = rec.levels?.find((l) => l.name === name);
    if (!level) return undefined;
    const depth = (p: string) => p.split('/').length;
    const d = Math.max(...level.classes.map(depth));
    const keep = level.classes.map((c, k) => [c, k] as const).filter(([c]) => !exactDepth || depth(c) === d);
    // The same dataset classes, in label order, named alike (their paths may differ: shuffle_parents moves them).
    const last = (p: string) => p.split('/').pop();
    const withMembers = rec.classes !== undefined && rec.classes.length === datasetClasses.length && rec.classes.every((c, j) => last(c) === last(datasetClasses[j]));
    const classes = keep.map(([c, k]) => (withMembers ? `${c} <- ${level.class_of.flatMap((v, j) => (v === k ? [j] : [])).join(', ')}` : c));
    return { classes, withMembers };
  };
}

/**
 * Decide the heads of a run. `trained`: resolveTrainLevels of this run. For a
 * fine-tuning run with a source: `new` gets a fresh head from its own seed
 * stream; `keep` takes the source's head for the run's level (or
 * finetune.head_level's); `coarsen` takes the source's finest head (or
 * finetune.head_level's), whose level must be strictly finer than the run's.
 * Without a source there is no head to keep or coarsen: the run gets a new
 * head (`log` says so). UsageError when the request cannot be met.
 */
export function planHeads(cfg: Config, request: HeadRequest, stage: 'pretrain' | 'finetune', h: Hierarchy, trained: TrainLevels, source: HeadSource | null, log: (line: string) => void = () => {}): HeadPlan {
  const level = trained.levels[0];
  const extra = trained.levels.slice(1).map((l, i) => ({ level: l, map: trained.maps[i + 1], weight: trained.weights[i + 1] }));
  const base = { extra, primaryWeight: trained.weights[0], mode: trained.mode, headClasses: level.classes.length, runClasses: level.classes.length, headMap: null, sourceHead: null, sourceLevel: null };
  if (stage === 'pretrain') {
    if (request.headLevel !== null) throw new UsageError(`finetune.head_level picks a source run's head; 'granular pretrain' has no source. Remove it.`);
    return { ...base, head: 'new', headSeed: null };
  }
  const want = request.head;
  if (!source) {
    if (want !== 'new') log(`finetune.head=${want}: this run has no source run (--from), so it starts a new head`);
    return { ...base, head: 'new', headSeed: finetuneHeadSeed(cfg.train.seed!) };
  }
  if (want === 'new') {
    if (request.headLevel !== null) throw new UsageError(`finetune.head_level picks which of the source's heads to keep or coarsen; with finetune.head=new it does nothing. Remove it, or set finetune.head=keep|coarsen.`);
    return { ...base, head: 'new', headSeed: finetuneHeadSeed(cfg.train.seed!) };
  }
  if (extra.length) throw new UsageError(`finetune.head=${want} with several levels in train.level: keep and coarsen act on a single target level. Fine-tune at one level, or use finetune.head=new.`);
  const srcSpecs = levelSpecs(source.cfg.train.level);
  let srcLevels: Level[];
  try {
    srcLevels = srcSpecs.map((s) => h.resolveLevel(s));
  } catch (e) {
    throw new UsageError(`finetune.head=${want}: the source run '${source.dir}' trained at ${JSON.stringify(source.cfg.train.level)}, which this data's hierarchy cannot resolve (${(e as Error).message}). Use finetune.head=new.`);
  }
  const headName = (i: number) => (i === 0 ? 'head' : extraHeadName(srcLevels[i].name));
  const pickNamed = (spec: string): number => {
    const l = h.resolveLevel(spec);
    const i = srcLevels.findIndex((s) => s.name === l.name);
    if (i < 0) throw new UsageError(`finetune.head_level '${spec}' is not a level the source run '${source.dir}' trained (it has heads for ${srcLevels.map((s) => s.name).join(', ')}).`);
    return i;
  };
  if (want === 'keep') {
    let i: number;
    if (request.headLevel !== null) i = pickNamed(request.headLevel);
    else if (srcLevels.length === 1) i = 0;
    else {
      i = srcLevels.findIndex((s) => s.name === level.name);
      if (i < 0) throw new UsageError(`finetune.head=keep: the source run '${source.dir}' has heads for ${srcLevels.map((s) => s.name).join(', ')}, none for '${level.name}'. Fine-tune at one of those levels, set finetune.head_level, or use coarsen/new.`);
    }
    if (srcLevels[i].classes.length !== level.classes.length) {
      throw new UsageError(`finetune.head=keep needs the target level to have as many classes as the source's head (${srcLevels[i].classes.length}); '${primaryLevelSpec(cfg.train.level)}' has ${level.classes.length}. Use finetune.head=new, or coarsen to train the finer head through summed probabilities.`);
    }
    // Same count is not enough: output k of the kept head must mean class k of the target level (issue 21, item 8).
    const recorded = source.levelClasses?.(srcLevels[i].name, i > 0 && source.cfg.train.multi_level === 'semantic_softmax', h.classes.map((c) => h.path(c)));
    // Each class by its path and, where both runs have the same dataset classes, the dataset classes under it.
    const target = level.classes.map((c, k) => {
      if (!recorded?.withMembers) return h.path(c);
      return `${h.path(c)} <- ${Array.from(level.classOf).flatMap((v, j) => (v === k ? [j] : [])).join(', ')}`;
    });
    if (recorded && recorded.classes.join('\n') !== target.join('\n')) {
      const k = recorded.classes.findIndex((c, j) => c !== target[j]);
      throw new UsageError(
        `finetune.head=keep: the source's '${srcLevels[i].name}' head was trained on other classes than this run's level '${level.name}' (output ${k} is '${recorded.classes[k]}' there, '${target[k]}' here). ` +
          `Its outputs would be read as the wrong classes. Use finetune.head=new.`,
      );
    }
    return { ...base, head: 'keep', headSeed: null, sourceHead: headName(i), sourceLevel: srcLevels[i].name };
  }
  // coarsen
  if (cfg.train.loss !== 'xent') throw new UsageError(`finetune.head=coarsen trains on summed probabilities, a cross-entropy; train.loss is '${cfg.train.loss}'. Set train.loss=xent.`);
  const i = request.headLevel !== null ? pickNamed(request.headLevel) : 0;
  const from = srcLevels[i];
  const map = from.name === level.name ? null : coarsening(from, level);
  if (!map) {
    throw new UsageError(
      `finetune.head=coarsen trains the source's '${from.name}' head (${from.classes.length} classes) through summed probabilities at the target level, so the target must be coarser; '${level.name}' (${level.classes.length} classes) is not. ` +
        `Fine-tune at a coarser level (e.g. --level top), or use finetune.head=keep for the same level.`,
    );
  }
  return { ...base, head: 'coarsen', headClasses: from.classes.length, headMap: map, headSeed: null, sourceHead: headName(i), sourceLevel: from.name };
}

/** The objective a run minimises, from its head plan (see models/objective.ts). Dispose it when the run ends. */
export function makeObjective(plan: HeadPlan, cfg: Config): Objective & { dispose(): void } {
  const smoothing = cfg.train.label_smoothing;
  if (plan.headMap) {
    if (cfg.train.loss !== 'xent') throw new UsageError(`finetune.head=coarsen trains on summed probabilities, a cross-entropy; train.loss is '${cfg.train.loss}'. Set train.loss=xent.`);
    return coarsenedObjective(plan.headMap, plan.runClasses, smoothing);
  }
  if (plan.extra.length && plan.mode === 'semantic_softmax') {
    return semanticSoftmaxObjective([
      { numClasses: plan.headClasses, map: null, weight: plan.primaryWeight },
      ...plan.extra.map((e) => ({ numClasses: e.level.classes.length, map: e.map, weight: e.weight })),
    ], smoothing);
  }
  if (plan.extra.length) {
    return multiLevelObjective(cfg.train.loss, [
      { numClasses: plan.headClasses, map: null, weight: plan.primaryWeight },
      ...plan.extra.map((e) => ({ numClasses: e.level.classes.length, map: e.map, weight: e.weight })),
    ], smoothing);
  }
  return { ...plainObjective(cfg.train.loss, plan.headClasses, smoothing), dispose: () => {} };
}

/**
 * The heads of a finished run, for re-evaluating it (`granular eval`): its
 * trained levels from its config, and, for a coarsen run, the kept head's
 * level from its summary.json (`head_level`).
 */
export function headsOfRun(summary: Record<string, unknown>, h: Hierarchy, trained: TrainLevels): HeadPlan {
  const level = trained.levels[0];
  const extra = trained.levels.slice(1).map((l, i) => ({ level: l, map: trained.maps[i + 1], weight: trained.weights[i + 1] }));
  const plan: HeadPlan = { head: 'new', headClasses: level.classes.length, runClasses: level.classes.length, headMap: null, extra, primaryWeight: trained.weights[0], mode: trained.mode, headSeed: null, sourceHead: null, sourceLevel: null };
  if (summary.head !== 'coarsen') return plan;
  const from = h.resolveLevel(String(summary.head_level));
  const map = coarsening(from, level);
  if (!map) throw new UsageError(`the run's kept head is at level '${from.name}', which does not coarsen to its level '${level.name}'; the run folder is inconsistent.`);
  return { ...plan, head: 'coarsen', headClasses: from.classes.length, headMap: map, sourceLevel: from.name };
}

/**
 * What summary.json says about a run's levels and heads: `level` (all trained
 * levels joined by '+'), `levels` and `level_weights` for multi-level runs,
 * `head` (new/keep/coarsen), `head_seed` of a new head, and for a kept or
 * coarsened one the source head it came from (`head_from`) and its level
 * (`head_level`).
 */
export function headsSummary(trained: TrainLevels, plan: HeadPlan, headSeed: number): Record<string, unknown> {
  return {
    level: levelsName(trained.levels),
    ...(trained.levels.length > 1 ? { levels: trained.levels.map((l) => l.name), level_weights: trained.weights, multi_level: trained.mode } : {}),
    head: plan.head,
    head_seed: plan.head === 'new' ? headSeed : null,
    ...(plan.sourceHead ? { head_from: plan.sourceHead, head_level: plan.sourceLevel } : {}),
  };
}
