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
 * The metric rule: the relative change of the metric over the last `window`
 * measurements fell below `value` (the measure has settled: stop opening).
 */
export function metricStopMet(u: UnfreezeConfig, history: readonly number[]): boolean {
  if (!u.stop || !('metric' in u.stop)) return false;
  const w = u.stop.window;
  if (history.length <= w) return false;
  const now = history[history.length - 1];
  const before = history[history.length - 1 - w];
  const rel = Math.abs(now - before) / Math.max(Math.abs(before), 1e-12);
  return rel < u.stop.value;
}

/** Per-block learning-rate multipliers: decay^(distance from the head); the head gets 1. */
export function blockLrScale(nBlocks: number, decay: number): number[] {
  return Array.from({ length: nBlocks }, (_, i) => Math.pow(decay, nBlocks - i));
}
