/**
 * The fine-tuning plan: everything `finetune.*` decides, decided here once per
 * run. Which blocks stay frozen (`freeze`), which weights come from the source
 * run (`head`, `transfer`), whether the frozen prefix can be cached, the
 * gradual-unfreezing schedule (`unfreeze`), the per-block learning rates
 * (`lr_per_block_decay`) and the batch-norm mode of each block (`batchnorm`).
 * The loop and the stage only read the plan; a pretraining run gets the plan
 * that trains every block the plain way.
 *
 * Gradual unfreezing follows Lightning's BaseFinetuning shape: what to freeze
 * before training, what to change after each step; the checkpoint records the
 * result. Orders: top-down is ULMFiT's (Howard & Ruder 2018); the stop rules are
 * Liu & Gurevych (2024); frozen_only transfer is Dar et al.'s.
 */
import * as path from 'node:path';
import { Config } from '../config/schema';
import { fisherTrace, Probe } from '../measure/dynamics';
import { buildNetwork } from '../models/archs';
import { Network } from '../models/network';
import { readModelWeights } from '../runs/bundle';
import { appendMetrics, FILES } from '../runs/rundir';
import { assignWeights, Stage } from '../runs/run';
import { UsageError } from '../util/errors';
import { Rng } from '../util/rng';
import { ScheduleState } from './checkpoint';
import { TrainableSet } from './trainable';

export type UnfreezeConfig = NonNullable<Config['finetune']['unfreeze']>;

/** What a run trains and how; built once by `planFinetune`. */
export interface FinetunePlan {
  /** Blocks frozen for the whole run, counted from the input side (0 when pretraining). */
  frozenBlocks: number;
  /** The gradual-unfreezing schedule, or null (the trainable blocks never change). */
  unfreeze: UnfreezeConfig | null;
  /** Learning-rate multiplier of each block (the head always gets 1). */
  lrScale: number[];
  /** Batch norm of a trainable block uses batch statistics (false: every block stays in inference mode). */
  batchnormTrains: boolean;
  /** Train on cached outputs of the frozen prefix (see `prefixCacheable`). */
  prefixCache: boolean;
  /** finetune.transfer=frozen_only: the seed the unfrozen blocks were re-initialised from (transferReinitSeed); null otherwise. */
  reinitSeed?: number | null;
}

/**
 * `--freeze N|all` as typed on the command line: a block count or 'all'.
 * Throws UsageError for anything else; the range is checked against the
 * network by `frozenBlockCount`.
 */
export function parseFreeze(flag: string): number | 'all' {
  const f = flag.trim();
  if (f !== 'all' && !/^\d+$/.test(f)) throw new UsageError(`--freeze '${flag}' must be a number of blocks (0, 1, ...) or 'all'.`);
  return f === 'all' ? 'all' : Number(f);
}

/**
 * Resolve `finetune.freeze` to a block count of `net`. Throws UsageError past
 * the last block, naming the valid range.
 */
export function frozenBlockCount(net: Network, freeze: number | 'all'): number {
  return frozenCount(freeze, net.arch, net.blocks.map((b) => b.name), '--freeze');
}

function frozenCount(freeze: number | 'all', arch: string, blocks: readonly string[], name: string): number {
  if (freeze === 'all') return blocks.length;
  if (freeze > blocks.length) {
    throw new UsageError(`${name} ${freeze} is more than the ${blocks.length} block(s) of ${arch} (${blocks.join(', ')}). Use 0..${blocks.length}, or 'all' for a linear probe.`);
  }
  return freeze;
}

/**
 * Check, before anything is built, that a stage can carry out its fine-tuning
 * settings: an unfreezing schedule only on a finetune stage, finetune.freeze
 * within `blocks` (the architecture's block names, input side first). Sweeps
 * check every run with it; planFinetune checks the same. Throws UsageError.
 */
export function checkFinetuneSettings(cfg: Config, stage: Stage, arch: string, blocks: readonly string[]): void {
  if (stage === 'pretrain' && cfg.finetune.unfreeze !== null) {
    throw new UsageError(`finetune.unfreeze is a fine-tuning schedule; 'granular pretrain' trains every block. Remove it, or use 'granular finetune'.`);
  }
  if (stage === 'finetune') frozenCount(cfg.finetune.freeze, arch, blocks, 'finetune.freeze');
}

/** The head a run asks for: finetune.head (new | keep | coarsen) and finetune.head_level; heads.ts planHeads decides what it gets. */
export interface HeadRequest {
  head: Config['finetune']['head'];
  headLevel: string | null;
}

export function headRequest(cfg: Config): HeadRequest {
  return { head: cfg.finetune.head, headLevel: cfg.finetune.head_level };
}

/**
 * Prepare `net` for the run and decide the plan: load the source run's
 * weights (`sourceDir`, when fine-tuning from one), count the frozen blocks,
 * re-initialise the unfrozen ones for `transfer: frozen_only`. `shape` is the
 * input [H, W, C]; `sourceHead` the source's weight prefix that goes into the
 * head (finetune.head keep/coarsen, decided by heads.ts planHeads), null for a
 * new head. Throws UsageError for a plan that cannot be carried out (freeze
 * out of range, an unfreezing schedule on a pretraining run).
 */
export function planFinetune(cfg: Config, stage: Stage, net: Network, sourceDir: string | null, shape: [number, number, number], sourceHead: string | null): FinetunePlan {
  const ft = cfg.finetune;
  if (sourceDir) loadSourceWeights(net, sourceDir, sourceHead);
  if (stage === 'pretrain') {
    checkFinetuneSettings(cfg, stage, net.arch, net.blocks.map((b) => b.name));
    return { frozenBlocks: 0, unfreeze: null, lrScale: blockLrScale(net.blocks.length, 1), batchnormTrains: true, prefixCache: false };
  }
  const frozenBlocks = frozenBlockCount(net, ft.freeze);
  const reinitSeed = sourceDir && ft.transfer === 'frozen_only' ? transferReinitSeed(cfg.train.seed!) : null;
  if (reinitSeed !== null) reinitUnfrozen(net, cfg, shape, net.numClasses, frozenBlocks, reinitSeed);
  return {
    reinitSeed,
    frozenBlocks,
    unfreeze: ft.unfreeze,
    lrScale: blockLrScale(net.blocks.length, ft.lr_per_block_decay),
    batchnormTrains: ft.batchnorm === 'train',
    prefixCache: prefixCacheable(cfg, frozenBlocks),
  };
}

/**
 * The frozen prefix can be computed once per example when it never trains and
 * is deterministic: permanently frozen blocks (no unfreezing schedule) run in
 * inference mode, and no augmentation reaches them. GRANULAR_PREFIX_CACHE=0
 * turns it off (the tests compare both ways).
 */
function prefixCacheable(cfg: Config, frozen: number): boolean {
  return frozen > 0 && cfg.finetune.unfreeze === null && cfg.data.augment.length === 0 && process.env.GRANULAR_PREFIX_CACHE !== '0';
}

/** The source run's weights into `net`; `sourceHead` names the saved head that goes into the primary head (null: it keeps its fresh initialisation). */
function loadSourceWeights(net: Network, sourceDir: string, sourceHead: string | null): void {
  const saved = readModelWeights(path.join(sourceDir, FILES.model));
  try {
    assignWeights(net, saved, sourceDir, sourceHead ?? false);
  } finally {
    for (const t of saved.values()) t.dispose();
  }
}

/**
 * The seed of the blocks that `finetune.transfer: frozen_only` trains anew:
 * a stream of its own (train.seed and a fixed stream number), like a new
 * head's (heads.ts finetuneHeadSeed). Building them with train.seed itself
 * would give back, bit for bit, the weights the source run started from,
 * which its trained weights still resemble (issue 21, item 2).
 */
export function transferReinitSeed(trainSeed: number): number {
  return 1 + (new Rng(trainSeed, 0x7e1f).uint32() % 2147483646);
}

/**
 * Dar et al.'s transfer: only the frozen blocks keep the pretrained weights;
 * the others start anew, from the architecture's initialisation drawn with
 * `seed` (transferReinitSeed; recorded in summary.json as `reinit_seed`).
 * The head is not touched here: heads.ts decides it.
 */
function reinitUnfrozen(net: Network, cfg: Config, shape: [number, number, number], numClasses: number, frozen: number, seed: number): void {
  const fresh = buildNetwork({ ...cfg, train: { ...cfg.train, seed } }, shape, numClasses);
  const init = new Map(fresh.variables().map((v) => [v.name, v.variable]));
  for (const v of net.variables()) if (v.block >= frozen) v.variable.assign(init.get(v.name)!);
  fresh.dispose();
}

/** Per-block learning-rate multipliers: decay^(distance from the head); the head gets 1. */
export function blockLrScale(nBlocks: number, decay: number): number[] {
  return Array.from({ length: nBlocks }, (_, i) => Math.pow(decay, nBlocks - i));
}

/** Whether each block runs in training mode (batch statistics) in a training step, given which blocks train. */
export function batchNormModes(plan: FinetunePlan, trainable: readonly boolean[]): boolean[] {
  return trainable.map((t) => t && plan.batchnormTrains);
}

/** Blocks that may open, in opening order (`fisher` decides at run time: input order here). */
export function openingOrder(nBlocks: number, frozenForever: number, order: UnfreezeConfig['order'], seed: number): number[] {
  const cand = Array.from({ length: nBlocks - frozenForever }, (_, i) => frozenForever + i);
  if (order === 'top-down') return cand.reverse();
  if (order === 'random') new Rng(seed, 53).shuffle(cand);
  return cand;
}

/** Trainable blocks at step 0. */
export function initialTrainable(nBlocks: number, frozenForever: number, u: UnfreezeConfig | null, seed: number): boolean[] {
  const t = Array.from({ length: nBlocks }, (_, i) => i >= frozenForever);
  if (!u) return t;
  const open = new Set(u.order === 'fisher' ? [] : openingOrder(nBlocks, frozenForever, u.order, seed).slice(0, u.start));
  if (u.order === 'fisher' && u.start > 0) {
    // Without a measurement yet, `fisher` starts like top-down.
    for (const b of openingOrder(nBlocks, frozenForever, 'top-down', seed).slice(0, u.start)) open.add(b);
  }
  return t.map((_, i) => open.has(i));
}

/** Whether a block opens after training step `step` (1-based count of finished steps). */
export function opensAfter(u: UnfreezeConfig, step: number, stepsPerEpoch: number): boolean {
  const period = u.unit === 'step' ? u.every : u.every * stepsPerEpoch;
  return step > 0 && step % period === 0;
}

/** Fixed stop rules (a step or an epoch) are met once that point is reached. */
export function fixedStopMet(u: UnfreezeConfig, step: number, stepsPerEpoch: number): boolean {
  if (!u.stop) return false;
  if ('step' in u.stop) return step >= u.stop.step;
  if ('epoch' in u.stop) return step >= u.stop.epoch * stepsPerEpoch;
  return false;
}

/**
 * The metric rules, on the history of the watched measure (one value per
 * dynamics row, oldest first):
 * - `relative_change_below`: the relative change over the last `window`
 *   measurements fell below `value` (the measure has settled). It compares
 *   values `window` rows apart, so a measure that keeps falling by a constant
 *   factor per row (a geometric decay, as the Fisher trace does after its early
 *   peak) never meets it;
 * - `below_fraction_of_peak`: the latest value fell below `value` times the
 *   running maximum of the history (the early period is over once the trace
 *   has lost that share of its peak); fires on a geometric decay.
 */
export function metricStopMet(u: UnfreezeConfig, history: readonly number[]): boolean {
  if (!u.stop || !('metric' in u.stop) || history.length === 0) return false;
  const stop = u.stop;
  const now = history[history.length - 1];
  if (stop.when === 'below_fraction_of_peak') return belowFractionOfPeak(history, stop.value);
  const w = stop.window;
  if (history.length <= w) return false;
  const before = history[history.length - 1 - w];
  const rel = Math.abs(now - before) / Math.max(Math.abs(before), 1e-12);
  return rel < stop.value;
}

/**
 * The latest value is below `fraction` x the maximum of all values so far
 * (itself included), once that maximum is positive. A Monte-Carlo sharpness
 * estimate can be negative (E[L(w + delta)] - L(w) from a few draws); "a
 * fraction of a negative peak" means nothing, so the rule waits for a
 * positive one.
 */
export function belowFractionOfPeak(history: readonly number[], fraction: number): boolean {
  if (history.length === 0) return false;
  let peak = -Infinity;
  for (const v of history) if (v > peak) peak = v;
  return peak > 0 && history[history.length - 1] < fraction * peak;
}

/** The sentence an `unfreeze_stop` event gives for a metric rule that fired. */
export function metricStopReason(u: UnfreezeConfig, history: readonly number[]): string {
  const stop = u.stop;
  if (!stop || !('metric' in stop)) return '';
  const now = history[history.length - 1];
  if (stop.when === 'below_fraction_of_peak') {
    const peak = Math.max(...history);
    return `${stop.metric} ${now.toPrecision(4)} fell below ${stop.value} x its peak ${peak.toPrecision(4)}`;
  }
  return `${stop.metric} changed by less than ${stop.value} over ${stop.window} measurements`;
}

/**
 * Gradual unfreezing (finetune.unfreeze): opens one more block every `every`
 * epochs or steps, in the configured order, until every block is open or a stop
 * rule (a step, an epoch, or a dynamics measure that stopped changing) ends it.
 * Each opening and the stop are `event` rows in metrics.jsonl.
 */
export class Unfreezer {
  constructor(
    private readonly u: UnfreezeConfig,
    private readonly trainable: TrainableSet,
    readonly schedule: ScheduleState,
    private readonly ctx: { net: Network; runDir: string; frozenBlocks: number; seed: number; stepsPerEpoch: number; fisherProbe: Probe | null; onEvent?: (row: Record<string, unknown>) => void },
  ) {}

  /** The plan's schedule, or null when it has none. */
  static of(plan: FinetunePlan, trainable: TrainableSet, schedule: ScheduleState, ctx: Omit<Unfreezer['ctx'], 'frozenBlocks'>): Unfreezer | null {
    return plan.unfreeze ? new Unfreezer(plan.unfreeze, trainable, schedule, { ...ctx, frozenBlocks: plan.frozenBlocks }) : null;
  }

  /** After a dynamics row: the metric stop rule looks at its measure. */
  observe(m: Record<string, number>, epoch: number, step: number): void {
    const stop = this.u.stop;
    if (!stop || !('metric' in stop) || this.schedule.stopped) return;
    this.schedule.history.push(m[stop.metric]);
    if (metricStopMet(this.u, this.schedule.history)) this.stop(epoch, step, metricStopReason(this.u, this.schedule.history));
  }

  /** Whether afterStep(_, step) may change the network or write a row (the loop reads its pending losses first). */
  actsAfter(step: number): boolean {
    return !this.schedule.stopped && (fixedStopMet(this.u, step, this.ctx.stepsPerEpoch) || opensAfter(this.u, step, this.ctx.stepsPerEpoch));
  }

  /** After each step: stop on a fixed step/epoch, or open the next block when it is due. */
  async afterStep(epoch: number, step: number): Promise<void> {
    if (this.schedule.stopped) return;
    if (fixedStopMet(this.u, step, this.ctx.stepsPerEpoch)) return this.stop(epoch, step, `reached ${JSON.stringify(this.u.stop)}`);
    if (!opensAfter(this.u, step, this.ctx.stepsPerEpoch)) return;
    const { net, seed } = this.ctx;
    const closed = openingOrder(net.blocks.length, this.ctx.frozenBlocks, this.u.order, seed).filter((b) => !this.trainable.flags[b]);
    if (!closed.length) return;
    let pick = closed[0];
    let why: string = this.u.order;
    if (this.u.order === 'fisher') {
      const per = (await fisherTrace(net, this.ctx.fisherProbe!, true, seed)).perBlock;
      pick = closed.reduce((a, b) => ((per[net.blocks[b].name] ?? 0) > (per[net.blocks[a].name] ?? 0) ? b : a));
      why = `fisher (fisher_trace@${net.blocks[pick].name} = ${(per[net.blocks[pick].name] ?? 0).toPrecision(4)})`;
    }
    this.trainable.open(pick);
    this.event({ kind: 'event', event: 'unfreeze', block: net.blocks[pick].name, order: why, epoch, step, ...this.trainable.row() });
  }

  private stop(epoch: number, step: number, reason: string): void {
    this.schedule.stopped = true;
    this.event({ kind: 'event', event: 'unfreeze_stop', epoch, step, reason, ...this.trainable.row() });
  }

  /** An event row in metrics.jsonl, and on the terminal as it happens. */
  private event(row: Record<string, unknown>): void {
    appendMetrics(this.ctx.runDir, row);
    this.ctx.onEvent?.(row);
  }
}
