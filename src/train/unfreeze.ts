import { Config } from '../config/schema';
import { Rng } from '../util/rng';

/**
 * Gradual unfreezing as pure schedule logic (no tensors): which blocks are
 * trainable at step 0, when the next one opens, and when opening stops.
 * Lightning's BaseFinetuning shape: what to freeze before training, what to
 * change at each step; the checkpoint records the result.
 */
export type UnfreezeConfig = NonNullable<Config['finetune']['unfreeze']>;

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
 * Steps after which a dynamics row is written. 'auto': half-way through the
 * first epoch (the early period moves fastest), then after epochs 1, 2, 4, 8,
 * 16, ... and at the end, so the cost stays a small share of a run.
 */
export function isDynamicsStep(every: number | 'auto', step: number, stepsPerEpoch: number, totalSteps: number): boolean {
  if (every === 0) return false;
  if (every !== 'auto') return step % every === 0 || step === totalSteps;
  if (step === 0 || step === totalSteps) return true;
  if (step < stepsPerEpoch) return step === Math.ceil(stepsPerEpoch / 2);
  if (step % stepsPerEpoch !== 0) return false;
  const e = step / stepsPerEpoch;
  return (e & (e - 1)) === 0;
}

/** Per-block learning-rate multipliers: decay^(distance from the head); the head gets 1. */
export function blockLrScale(nBlocks: number, decay: number): number[] {
  return Array.from({ length: nBlocks }, (_, i) => Math.pow(decay, nBlocks - i));
}
