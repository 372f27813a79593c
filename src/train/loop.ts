import * as tf from '@tensorflow/tfjs';
import { SingleBar, Presets } from 'cli-progress';
import { Config } from '../config/schema';
import { Dataset } from '../data/types';
import { levelLabels, Split } from '../data/split';
import { Level } from '../hierarchy/tree';
import { alignmentMetrics, dynamicsMetrics, evaluate, isDynamicsStep, trainAccuracy, validate } from '../measure/evaluate';
import { hasConverged, plateauReached } from '../measure/convergence';
import { coarsenedLogProbs, coarsenMembership } from '../models/objective';
import { HeadPlan, makeObjective } from './heads';
import { Network } from '../models/network';
import { appendMetrics, FILES, readMetrics } from '../runs/rundir';
import { saveModel } from '../runs/run';
import { RunFailure } from '../util/errors';
import { Rng } from '../util/rng';
import { batchSource } from '../data/prefetch';
import { saveCheckpoint, CheckpointState, InEpoch, ScheduleState } from './checkpoint';
import { batchNormModes, FinetunePlan, initialTrainable, Unfreezer } from './finetune';
import { TrainableSet } from './trainable';
import { oodMetrics } from '../measure/ood';
import { cachePart, evalBatchSize } from '../measure/predict';
import { makeProbe } from '../measure/dynamics';
import { NamedOptimizer } from './optimizer';
import { learningRate } from './schedule';

/** Everything the loop needs, prepared (and validated) by the stage. */
export interface TrainJob {
  cfg: Config;
  net: Network;
  data: Dataset;
  split: Split;
  level: Level;
  coarser: Array<{ level: Level; map: Int32Array }>;
  /** Labels at `level` for split.train (label noise already applied). */
  trainLabels: Int32Array;
  /** What trains and how (finetune.ts): frozen blocks, unfreezing, per-block rates, batch-norm modes, prefix cache. */
  plan: FinetunePlan;
  /** The heads and what they train on (heads.ts): a new, kept or coarsened head; one per level when multi-level. */
  heads: HeadPlan;
  runDir: string;
  quiet: boolean;
  /** No per-epoch output at all (the quickstart prints its own table). */
  silent?: boolean;
  resumeFrom?: CheckpointState;
  /** The last epoch row already in metrics.jsonl (resume), so a run resumed at its end still reports. */
  previousRow?: Record<string, number>;
  optimizer: NamedOptimizer;
  /** Weights to measure distances from (the pretrained values); kept in the checkpoint. */
  reference?: ReadonlyMap<string, tf.Tensor>;
  /** Called between steps; returning true stops the loop at a step boundary. */
  shouldStop?: () => boolean;
  /** performance.now() when this process started the run (elapsed time, wall_seconds across resumes). */
  startedAt?: number;
}

export interface TrainResult {
  final: Record<string, number>;
  /** Whether the run learned its level (DESIGN.md "Convergence") and its training budget. */
  fit: { converged: boolean; train_acc_final: number; epochs_trained: number; train_images: number; budget_images: number };
  trainImagesPerSecond: number;
  /** Stopped by a signal at a step boundary (resumable); not early stopping, which completes the run. */
  stoppedEarly: boolean;
}

/**
 * Train `job.net` to cfg.train.epochs (or from a checkpoint on): every step
 * through TrainableSet.step under the plan, epoch/dynamics/event rows appended
 * to metrics.jsonl (metrics from measure/evaluate.ts), a checkpoint after each
 * epoch; with train.until_converged, it stops once the training loss has
 * plateaued. Returns the final metrics and whether the run converged; throws
 * RunFailure on a non-finite loss.
 */
export async function train(job: TrainJob): Promise<TrainResult> {
  const { cfg, net, data, split, runDir, plan } = job;
  const n = split.train.length;
  const bs = Math.min(cfg.train.batch_size, n);
  const stepsPerEpoch = Math.ceil(n / bs);
  // train.max_steps ends the run early (mid-epoch); the schedule runs its course within it.
  const totalSteps = Math.min(stepsPerEpoch * cfg.train.epochs, cfg.train.max_steps ?? Infinity);
  const warmup = Math.round(cfg.train.warmup_epochs * stepsPerEpoch);

  let epoch = 0;
  let step = 0;
  // Where a mid-epoch checkpoint left off inside its epoch (train.checkpoint_every_steps).
  let resumeInEpoch: InEpoch | null = null;
  let rng = new Rng(cfg.train.seed, 11);
  let carry: Record<string, number> = { trainImages: 0, trainSeconds: 0 };
  let trainableFlags = initialTrainable(net.blocks.length, plan.frozenBlocks, plan.unfreeze, cfg.train.seed);
  let schedule: ScheduleState = { stopped: false, history: [] };
  if (job.resumeFrom) {
    epoch = job.resumeFrom.epoch;
    step = job.resumeFrom.step;
    rng = new Rng(job.resumeFrom.rng);
    carry = { ...carry, ...job.resumeFrom.carry };
    // Checkpoints written before summary keys were snake_case.
    if (carry.dynamicsSeconds !== undefined) {
      carry.dynamics_seconds ??= carry.dynamicsSeconds;
      delete carry.dynamicsSeconds;
    }
    trainableFlags = job.resumeFrom.trainableBlocks.slice();
    schedule = job.resumeFrom.schedule ?? schedule;
    resumeInEpoch = job.resumeFrom.inEpoch ?? null;
  }

  // What trains; gradual unfreezing opens more of it.
  const trainable = new TrainableSet(net, trainableFlags, plan.lrScale);
  const valLabels = levelLabels(data.train, split.val, job.level);

  // Frozen-prefix cache: blocks that never train and run deterministically
  // (inference mode, no augmentation) map each example to the same output
  // every epoch, so compute it once and train the rest on it.
  const from = plan.prefixCache ? plan.frozenBlocks : 0;
  // Every evaluation pass (and the prefix cache, and the probes) holds eval.batch_size examples at a time.
  const evalBatch = evalBatchSize(cfg);
  const target = { ...job, batch: evalBatch };
  const cache = from > 0
    ? {
        train: await cachePart(net, data.train, split.train, data.shape, from, evalBatch),
        val: await cachePart(net, data.train, split.val, data.shape, from, evalBatch),
        test: await cachePart(net, data.test, split.test, data.shape, from, evalBatch),
      }
    : null;
  const trainX = cache ? cache.train.e.x : data.train.x;
  const trainIdx = cache ? cache.train.idx : split.train;
  const shape = cache ? cache.train.shape : data.shape;
  const size = shape.reduce((a, b) => a * b, 1);
  const rowBase = () => trainable.row();

  const dynamicsOn = cfg.eval.dynamics_every !== 0;
  // One fixed, seeded subset of training examples for every measurement of the run.
  const objective = makeObjective(job.heads, cfg);
  const coarsenProbes: tf.Tensor[] = [];
  const subset = (k: number) => {
    const probe = makeProbe(data.train.x, data.shape, split.train, job.trainLabels, k, cfg.train.seed, cfg.train.loss, evalBatch);
    if (!job.heads.headMap) return probe;
    // finetune.head: coarsen: the Fisher and sharpness see the run's predictive distribution, the coarsened one.
    const member = coarsenMembership(job.heads.headMap, job.heads.runClasses);
    coarsenProbes.push(member);
    return { ...probe, logProbs: (z: tf.Tensor) => coarsenedLogProbs(z, member), numClasses: job.heads.runClasses };
  };
  const fisherProbe = dynamicsOn || plan.unfreeze?.order === 'fisher' ? subset(cfg.eval.fisher_samples) : null;
  const sharpProbe = dynamicsOn ? subset(cfg.eval.sharpness_examples) : null;
  const reference = dynamicsOn ? job.reference ?? null : null;
  const out = new Progress(!job.silent, process.stderr.isTTY === true && !job.quiet && !job.silent);
  const unfreezer = Unfreezer.of(plan, trainable, schedule, { net, runDir, seed: cfg.train.seed, stepsPerEpoch, fisherProbe, onEvent: (e) => out.line(eventLine(e)) });
  let lastDynamics: Record<string, number> = {};
  const dynamicsRow = (rowEpoch: number) => {
    const t0 = performance.now();
    const m = dynamicsMetrics(net, cfg.eval, cfg.train.seed, fisherProbe!, sharpProbe!, reference);
    lastDynamics = m;
    lastDynamicsStep = step;
    appendMetrics(runDir, { kind: 'dynamics', epoch: rowEpoch, step, ...m, ...rowBase(), seconds: (performance.now() - t0) / 1000 });
    carry.dynamics_seconds = (carry.dynamics_seconds ?? 0) + (performance.now() - t0) / 1000;
    unfreezer?.observe(m, rowEpoch, step);
    return m;
  };
  let last: Record<string, number> = job.previousRow ?? {};
  // Mean training loss of every finished epoch (from metrics.jsonl when resuming): the convergence rule reads them.
  const epochLosses = readMetrics(runDir).filter((r) => r.kind === 'epoch' && Number(r.epoch) >= 1).map((r) => Number(r.train_loss));
  let lastDynamicsStep = -1;
  if (step === 0) {
    // The state before training: chance accuracy and alignment at initialisation.
    const init = { ...(await evaluate(target, cache?.test)), ...alignmentMetrics(net, data, cfg.data.seed) };
    const row0 = { epoch: 0, step: 0, ...init, ...rowBase() };
    appendMetrics(runDir, { kind: 'epoch', ...row0 });
    // A 0-epoch run reports the network it starts with.
    last = row0;
    carry = { ...carry, ...Object.fromEntries(Object.entries(init).filter(([k]) => k.startsWith('align')).map(([k, v]) => [`${k}_init`, v])) };
    if (dynamicsOn) dynamicsRow(0);
  }

  const startedAt = job.startedAt ?? performance.now();
  const wallBefore = job.resumeFrom?.carry.wall_seconds_done ?? 0;
  delete carry.wall_seconds_done;
  // A checkpoint carries the wall time spent on the run so far, so a resumed run's wall_seconds counts every process.
  const checkpoint = (st: Omit<CheckpointState, 'version' | 'tensors' | 'optimizer'>) => {
    saveCheckpoint(runDir, net, job.optimizer, job.reference ?? null, { ...st, carry: { ...st.carry, wall_seconds_done: wallBefore + (performance.now() - startedAt) / 1000 } });
  };
  // Early stopping and model-best/ look at val_acc only (never the test set).
  const stopRule = cfg.train.early_stop;
  let stopNow = false;
  const epochTimes: number[] = [];
  const bar = out.bar;
  // Batch t+1 is gathered (and augmented) on a worker thread while step t trains.
  const batches = batchSource(trainX, { size, shape: data.shape, augment: cache ? [] : cfg.data.augment, seed: cfg.train.seed }, bs);
  let stoppedEarly = false;
  try {

    const everySteps = cfg.train.checkpoint_every_steps;
    for (; epoch < cfg.train.epochs && step < totalSteps; epoch++) {
      // The shuffle is drawn from the state at the epoch's start, which a
      // mid-epoch checkpoint stores, so a resumed epoch replays the same order.
      const epochStart = rng.state();
      const order = Array.from({ length: n }, (_, i) => i);
      rng.shuffle(order);
      let { pos: start, lossSum, hits, seen, stepSeconds } = resumeInEpoch ?? { pos: 0, lossSum: 0, hits: 0, seen: 0, stepSeconds: 0 };
      resumeInEpoch = null;
      const t0 = performance.now();
      bar?.start(stepsPerEpoch, Math.ceil(start / bs), { epoch: epoch + 1, epochs: cfg.train.epochs, loss: '-', acc: '-', ips: '-' });
      // Augmentation draws from a generator seeded by the step, so a resumed run augments identically.
      batches.epoch(Int32Array.from(order, (o) => trainIdx[o]), Int32Array.from(order, (o) => job.trainLabels[o]), start, step);
      let lastEpoch = epoch + 1 === cfg.train.epochs;
      for (let s = start; s < n; s += bs) {
        const ts = performance.now();
        // Seconds from process start to the first training step (startup: data, model, first evaluation).
        if (step === 0) carry.first_step_seconds = ts / 1000;
        const { x: xbuf, y: ybuf, b } = batches.next();
        const lr = learningRate(cfg.train.schedule, cfg.train.lr, step, totalSteps, warmup);
        const { loss, hits: h } = trainable.step(xbuf, ybuf, b, shape, from, batchNormModes(plan, trainable.flags), objective, job.optimizer, lr);
        if (!Number.isFinite(loss)) {
          bar?.stop();
          throw new RunFailure(
            `the training loss became ${loss} at epoch ${epoch + 1}, step ${step + 1} (lr ${lr.toPrecision(3)}). ` +
              `The last good checkpoint (epoch ${epoch}) is kept. Lower train.lr or use train.warmup_epochs, then start a new run.`,
          );
        }
        hits += h;
        lossSum += loss * b;
        seen += b;
        step++;
        stepSeconds += (performance.now() - ts) / 1000;
        if (dynamicsOn && isDynamicsStep(cfg.eval.dynamics_every, step, stepsPerEpoch, totalSteps)) dynamicsRow(epoch + 1);
        unfreezer?.afterStep(epoch + 1, step);
        if (everySteps && step % everySteps === 0 && s + b < n) {
          checkpoint({ epoch, step, rng: epochStart, trainableBlocks: trainable.flags, schedule, carry, inEpoch: { pos: s + b, lossSum, hits, seen, stepSeconds } });
        }
        bar?.update(Math.ceil((s + b) / bs), { loss: (lossSum / seen).toFixed(4), acc: (hits / seen).toFixed(3), ips: Math.round(seen / stepSeconds) });
        // Yield to the event loop so signal handlers can run between steps.
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (job.shouldStop?.()) {
          stoppedEarly = true;
          break;
        }
        if (step >= totalSteps) {
          lastEpoch = true;
          break;
        }
      }
      bar?.stop();
      if (stoppedEarly) break;
      carry.trainImages += seen;
      carry.trainSeconds += stepSeconds;
      // Time the training thread waited for batches (the pipeline's cost on the critical path).
      carry.batch_wait_seconds = batches.waitedMs / 1000 + (job.resumeFrom?.carry.batch_wait_seconds ?? 0);
      epochLosses.push(lossSum / seen);
      // train.until_converged: this epoch is the last once the training loss has plateaued.
      const plateau = cfg.train.until_converged !== null && epoch + 1 < cfg.train.epochs && plateauReached(epochLosses, cfg.train.until_converged.patience);
      if (plateau) lastEpoch = true;
      if (plateau && dynamicsOn && lastDynamicsStep !== step) dynamicsRow(epoch + 1);
      const evalNow = (epoch + 1) % cfg.eval.every === 0 || lastEpoch;
      const valAcc = evalNow ? await validate(target, valLabels, cache?.val) : NaN;
      const test: Record<string, number> = evalNow ? await evaluate(target, cache?.test) : {};
      // The best epoch so far by val_acc: its network is model-best/.
      const improved = Number.isFinite(valAcc) && (carry.best_epoch === undefined || valAcc > carry.best_val_acc + stopRule.min_delta);
      if (improved) {
        carry.best_epoch = epoch + 1;
        carry.best_val_acc = valAcc;
        if (test.test_acc !== undefined) carry.best_test_acc = test.test_acc;
        await saveModel(net, runDir, FILES.modelBest);
      }
      stopNow = !lastEpoch && stopRule.patience > 0 && Number.isFinite(valAcc) && carry.best_epoch !== undefined && epoch + 1 - carry.best_epoch >= stopRule.patience;
      const isFinal = lastEpoch || stopNow;
      const row: Record<string, number> = {
        epoch: epoch + 1,
        step,
        lr: learningRate(cfg.train.schedule, cfg.train.lr, Math.max(0, step - 1), totalSteps, warmup),
        train_loss: lossSum / seen,
        train_acc: hits / seen,
        ...(evalNow ? { val_acc: valAcc, ...test, ...alignmentMetrics(net, data, cfg.data.seed) } : {}),
        // The OOD test once, on the final network.
        ...(isFinal ? await oodMetrics(cfg, net, data, split, job.level) : {}),
        ...rowBase(),
        images_per_second: seen / stepSeconds,
        epoch_seconds: (performance.now() - t0) / 1000,
        // Live tensors after the epoch: flat across epochs unless something leaks.
        num_tensors: tf.memory().numTensors,
      };
      appendMetrics(runDir, { kind: 'epoch', ...row });
      last = row;
      epochTimes.push(row.epoch_seconds);
      out.line(epochLine(row, cfg.train.epochs, epochTimes, (performance.now() - startedAt) / 1000, improved && cfg.train.epochs > 1));
      if (stopNow) {
        carry.stopped_epoch = epoch + 1;
        appendMetrics(runDir, { kind: 'event', event: 'early_stop', epoch: epoch + 1, step, reason: `val_acc has not improved on epoch ${carry.best_epoch} (${carry.best_val_acc.toFixed(4)}) for ${stopRule.patience} epoch(s)` });
        out.line(`early stop after epoch ${epoch + 1}: val_acc has not improved on epoch ${carry.best_epoch} (${carry.best_val_acc.toFixed(4)}) for ${stopRule.patience} epoch(s); model-best/ holds epoch ${carry.best_epoch}`);
      }
      if (plateau) {
        const reason = `train_loss changed by less than 1 % of the first epoch's (${epochLosses[0].toPrecision(4)}) per epoch over the last ${cfg.train.until_converged!.patience}+ epochs`;
        appendMetrics(runDir, { kind: 'event', event: 'converged', epoch: epoch + 1, step, reason, ...rowBase() });
        out.line(`converged after epoch ${epoch + 1}: ${reason}`);
      }
      checkpoint({ epoch: epoch + 1, step, rng: rng.state(), trainableBlocks: trainable.flags, schedule, carry });
      if (stopNow || plateau) break;
    }
  } finally {
    batches.close();
    objective.dispose();
  }
  fisherProbe?.x.dispose();
  sharpProbe?.x.dispose();
  tf.dispose(coarsenProbes);
  const final: Record<string, number | boolean> = { ...carry, ...last, ...lastDynamics, early_stopped: carry.stopped_epoch !== undefined };
  delete final.trainImages;
  delete final.trainSeconds;
  delete final.num_tensors;
  delete final.stopped_epoch;
  const fit = {
    converged: hasConverged(epochLosses),
    train_acc_final: stoppedEarly ? NaN : await trainAccuracy(target, job.trainLabels, cache?.train),
    epochs_trained: epochLosses.length,
    train_images: n,
    budget_images: epochLosses.length * n,
  };
  return { final: final as Record<string, number>, fit, trainImagesPerSecond: carry.trainSeconds ? carry.trainImages / carry.trainSeconds : 0, stoppedEarly };
}

/** `1:05:03`, `2:07`, `0:09`. */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const [h, m, r] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const p = (n: number) => String(n).padStart(2, '0');
  return h ? `${h}:${p(m)}:${p(r)}` : `${m}:${p(r)}`;
}

/**
 * The line an epoch leaves behind (in a terminal, once its progress bar is
 * cleared; piped, as the log): losses, val/test metrics where evaluated, the
 * epoch's time, the time so far and the ETA of the run from the mean epoch
 * time of this process. `*` marks a new best val_acc (model-best/).
 */
export function epochLine(row: Record<string, number>, epochs: number, epochTimes: readonly number[], elapsed: number, best: boolean): string {
  const f = (k: string, d = 3) => (row[k] === undefined || Number.isNaN(row[k]) ? '' : ` ${k} ${row[k].toFixed(d)}${k === 'val_acc' && best ? '*' : ''}`);
  const mean = epochTimes.reduce((a, b) => a + b, 0) / Math.max(1, epochTimes.length);
  const left = epochs - row.epoch;
  const eta = left > 0 ? ` ETA ${clock(mean * left)}` : '';
  return `epoch ${row.epoch}/${epochs}${f('train_loss', 4)}${f('train_acc')}${f('val_acc')}${f('test_acc')}${f('test_acc_hard')} ${Math.round(row.images_per_second)} img/s ${row.epoch_seconds.toFixed(1)} s elapsed ${clock(elapsed)}${eta}`;
}

/** An event row as a line: `epoch 3: block2 opened, 41,216 trainable params (top-down)`. */
export function eventLine(e: Record<string, unknown>): string {
  const params = typeof e.trainable_params === 'number' ? `${e.trainable_params.toLocaleString('en-US')} trainable params` : '';
  if (e.event === 'unfreeze') return `epoch ${e.epoch}, step ${e.step}: ${e.block} opened, ${params} (${e.order})`;
  if (e.event === 'unfreeze_stop') return `epoch ${e.epoch}, step ${e.step}: unfreezing stopped (${e.reason}); ${params}`;
  return `epoch ${e.epoch}: ${String(e.event)}${e.reason ? ` (${e.reason})` : ''}`;
}

/**
 * Where a run's progress goes (stderr): in a terminal, a progress bar while
 * an epoch runs, cleared when it ends so each epoch leaves one line; lines
 * written while the bar is up (events) go above it. Piped or --quiet, lines
 * only. Silent: nothing.
 */
class Progress {
  readonly bar: SingleBar | null;

  constructor(private readonly on: boolean, tty: boolean) {
    this.bar = on && tty
      ? new SingleBar({ format: 'epoch {epoch}/{epochs} [{bar}] {value}/{total} loss {loss} acc {acc} {ips} img/s', hideCursor: true, clearOnComplete: true, stream: process.stderr }, Presets.shades_classic)
      : null;
  }

  line(text: string): void {
    if (!this.on) return;
    const active = this.bar !== null && (this.bar as unknown as { isActive: boolean }).isActive;
    process.stderr.write(active ? `\r\x1b[2K${text}\n` : `${text}\n`);
    if (active) this.bar!.render();
  }
}
