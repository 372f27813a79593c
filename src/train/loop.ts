import * as tf from '@tensorflow/tfjs';
import { levelLabels } from '../data/labels/split';
import { alignmentMetrics, evaluate, isDynamicsStep, trainAccuracy, validate } from '../measure/evaluate';
import { convergence, majorityRate, plateauReached } from '../measure/convergence';
import { makeObjective } from './heads';
import { appendMetrics, readMetrics } from '../runs/rundir';
import { RunFailure } from '../util/errors';
import { Batch, batchSource } from '../data/cache/prefetch';
import { batchNormModes, Unfreezer } from './finetune';
import { TrainableSet } from './trainable';
import { StepLog, READ_EVERY } from './step-log';
import { decodeOnDevice, DeviceBatch, DeviceBatches } from './device-batch';
import { oodMetrics } from '../measure/ood';
import { evalBatchSize, prefixCache } from '../measure/predict';
import { learningRate } from './schedule';
import { BestEpoch, checkpointer, DynamicsProbes, faultAfterCheckpoint, finalMetrics, loopEnded, startState, TrainJob, TrainResult } from './loop-parts';
import { epochLine, eventLine, Progress } from './progress';

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

  const start = startState(cfg, net, plan, job.resumeFrom);
  let { epoch, step, rng, carry } = start;
  const { trainableFlags, schedule } = start;
  let resumeInEpoch = start.inEpoch;

  // What trains; gradual unfreezing opens more of it.
  const trainable = new TrainableSet(net, trainableFlags, plan.lrScale, plan.prefixCache ? plan.frozenBlocks : 0);
  const valLabels = levelLabels(data.train, split.val, job.level);

  // Frozen-prefix cache: blocks that never train and run deterministically
  // (inference mode, no augmentation) map each example to the same output
  // every epoch, so compute it once and train the rest on it.
  const from = plan.prefixCache ? plan.frozenBlocks : 0;
  // Every evaluation pass (and the prefix cache, and the probes) holds eval.batch_size examples at a time.
  const evalBatch = evalBatchSize(cfg);
  const target = { ...job, batch: evalBatch };
  if (from > 0) await job.dataReady?.();
  const cache = from > 0 ? await prefixCache(net, data, split, from, evalBatch) : null;
  const trainX = cache ? cache.train.e.x : data.train.x;
  const trainIdx = cache ? cache.train.idx : split.train;
  const shape = cache ? cache.train.shape : data.shape;
  const size = shape.reduce((a, b) => a * b, 1);
  const rowBase = () => trainable.row();

  const dynamicsOn = cfg.eval.dynamics_every !== 0;
  const objective = makeObjective(job.heads, cfg);
  // One fixed, seeded subset of training examples for every measurement of the run.
  const probes = new DynamicsProbes(cfg, data, split, job.trainLabels, job.heads, plan, evalBatch);
  const reference = dynamicsOn ? job.reference ?? null : null;
  const out = new Progress(!job.silent, process.stderr.isTTY === true && !job.quiet && !job.silent);
  const unfreezer = Unfreezer.of(plan, trainable, schedule, { net, runDir, seed: cfg.train.seed, stepsPerEpoch, fisherProbe: probes.fisher, onEvent: (e) => out.line(eventLine(e)) });
  let lastDynamics: Record<string, number> = {};
  const dynamicsRow = async (rowEpoch: number) => {
    const { metrics: m, seconds } = await probes.measure(net, cfg, reference);
    lastDynamics = m;
    lastDynamicsStep = step;
    appendMetrics(runDir, { kind: 'dynamics', epoch: rowEpoch, step, ...m, ...rowBase(), seconds });
    carry.dynamics_seconds = (carry.dynamics_seconds ?? 0) + seconds;
    unfreezer?.observe(m, rowEpoch, step);
  };
  // The last epoch row before the checkpoint (metrics.jsonl's, without its `kind`): summary.json's when no epoch follows.
  let last: Record<string, number> = Object.fromEntries(Object.entries(job.previousRow ?? {}).filter(([k]) => k !== 'kind'));
  // Mean training loss of every finished epoch (from metrics.jsonl when resuming): the convergence rule reads them.
  const doneRows = readMetrics(runDir).filter((r) => r.kind === 'epoch' && Number(r.epoch) >= 1);
  const epochLosses = doneRows.map((r) => Number(r.train_loss));
  // ... and each epoch's learning rate (at its last step): a plateau that only came with an annealed rate is no convergence.
  const epochLrs = doneRows.map((r) => Number(r.lr));
  let lastDynamicsStep = -1;
  if (job.resumeFrom) {
    // The last dynamics row before the checkpoint (metrics.jsonl keeps no later ones) is summary.json's, unless a later one replaces it:
    // a run resumed after its last dynamics row must report what the uninterrupted run reports.
    const rowKeys = new Set(['kind', 'epoch', 'step', 'seconds', ...Object.keys(rowBase())]);
    const prev = readMetrics(runDir).filter((r) => r.kind === 'dynamics').pop();
    if (prev) lastDynamics = Object.fromEntries(Object.entries(prev).filter(([k, v]) => !rowKeys.has(k) && typeof v === 'number')) as Record<string, number>;
  }
  if (step === 0) {
    // The state before training: chance accuracy and alignment at initialisation.
    const t0 = performance.now();
    // Every epoch row carries train_loss, train_acc and val_acc (DESIGN.md): at epoch 0 nothing has trained (null), and
    // val_acc is the untrained network's (null without a validation set). Early stopping and model-best/ start at epoch 1.
    const val0 = await validate(target, valLabels, cache?.val);
    const init = { ...(Number.isFinite(val0) ? { val_acc: val0 } : {}), ...(await evaluate(target, cache?.test)), ...(await alignmentMetrics(net, data, cfg.data.seed)) };
    // Part of first_step_seconds: the start-up proper is the rest.
    carry.initial_eval_seconds = (performance.now() - t0) / 1000;
    const row0 = { epoch: 0, step: 0, ...init, ...rowBase() };
    appendMetrics(runDir, { kind: 'epoch', epoch: 0, step: 0, train_loss: null, train_acc: null, val_acc: null, ...init, ...rowBase() });
    // A 0-epoch run reports the network it starts with.
    last = row0;
    carry = { ...carry, ...Object.fromEntries(Object.entries(init).filter(([k]) => k.startsWith('align')).map(([k, v]) => [`${k}_init`, v])) };
    await job.dataReady?.();
    if (dynamicsOn) await dynamicsRow(0);
  }

  const startedAt = job.startedAt ?? performance.now();
  const checkpoint = checkpointer(job, carry, startedAt);
  // Early stopping and model-best/ look at val_acc only (never the test set).
  const best = new BestEpoch(cfg.train.early_stop, carry, net, runDir);
  const epochTimes: number[] = [];
  const bar = out.bar;
  await job.dataReady?.();
  // Batch t+1 is gathered (and augmented) on a worker thread while step t trains.
  const augment = cache ? [] : cfg.data.augment;
  // Pixels go up as uint8 codes and are decoded on the device where that pays (./device-batch.ts).
  const upload = new DeviceBatches(decodeOnDevice(trainX, augment, job.deviceMemory === true), trainX, shape);
  const batches = batchSource(trainX, { size, shape: data.shape, augment, seed: cfg.train.seed, codes: upload.codes }, bs);
  const toDevice = (batch: Batch) => upload.toDevice(batch);
  // The next step's batch, already on the device (made before the loop waits on the current step).
  let next: DeviceBatch | null = null;
  // Steps whose loss and hits are still on the device.
  const log = new StepLog();
  let stoppedEarly = false;
  try {

    const everySteps = cfg.train.checkpoint_every_steps;
    // A checkpoint written after the loop decided to end (early stop, convergence) carries that decision:
    // a run resumed from it trains no further epoch, as the uninterrupted run did not.
    for (; epoch < cfg.train.epochs && step < totalSteps && !loopEnded(carry); epoch++) {
      // The shuffle is drawn from the state at the epoch's start, which a
      // mid-epoch checkpoint stores, so a resumed epoch replays the same order.
      const epochStart = rng.state();
      const order = Array.from({ length: n }, (_, i) => i);
      rng.shuffle(order);
      const { pos: start, ...sums } = resumeInEpoch ?? { pos: 0, lossSum: 0, hits: 0, seen: 0, stepSeconds: 0 };
      // lossSum, hits and seen count the steps read back so far (./step-log.ts); stepSeconds every step.
      const acc = sums;
      resumeInEpoch = null;
      const t0 = performance.now();
      bar?.start(stepsPerEpoch, Math.ceil(start / bs), { epoch: epoch + 1, epochs: cfg.train.epochs, loss: '-', acc: '-', ips: '-' });
      // Augmentation draws from a generator seeded by the step, so a resumed run augments identically.
      batches.epoch(Int32Array.from(order, (o) => trainIdx[o]), Int32Array.from(order, (o) => job.trainLabels[o]), start, step);
      let lastEpoch = epoch + 1 === cfg.train.epochs;
      // Read the pending steps' losses and hits (one readback) and add them up in step order, as
      // when every step was read; a non-finite loss fails the run naming its step.
      const settle = async () => {
        for (const r of await log.read()) {
          if (!Number.isFinite(r.loss)) {
            bar?.stop();
            throw new RunFailure(
              `the training loss became ${r.loss} at epoch ${r.epoch}, step ${r.step} (lr ${r.lr.toPrecision(3)}). ` +
                `The last good checkpoint (epoch ${r.epoch - 1}) is kept. Lower train.lr or use train.warmup_epochs, then start a new run.`,
            );
          }
          acc.hits += r.hits;
          acc.lossSum += r.loss * r.b;
          acc.seen += r.b;
        }
      };
      for (let s = start; s < n; s += bs) {
        const ts = performance.now();
        // Seconds from process start to the first training step (startup: data, model, first evaluation).
        if (step === 0) carry.first_step_seconds = ts / 1000;
        const cur = next ?? toDevice(batches.next());
        next = null;
        const b = cur.b;
        const lr = learningRate(cfg.train.schedule, cfg.train.lr, step, totalSteps, warmup);
        try {
          log.push({ b, epoch: epoch + 1, step: step + 1, lr }, trainable.step(cur.x, cur.y, batchNormModes(plan, trainable.flags), objective, job.optimizer, lr));
        } finally {
          tf.dispose([cur.x, cur.y]);
        }
        step++;
        const endOfEpoch = s + b >= n || step >= totalSteps;
        // The next batch goes to the device before anything below waits on this step, so its upload overlaps the step's kernels.
        if (!endOfEpoch) next = toDevice(batches.next());
        const dynamicsNow = dynamicsOn && isDynamicsStep(cfg.eval.dynamics_every, step, stepsPerEpoch, totalSteps);
        const checkpointNow = everySteps > 0 && step % everySteps === 0 && !endOfEpoch;
        // Losses are read every READ_EVERY steps, at the epoch's end, and before anything that
        // measures, changes or saves the network (dynamics rows, unfreezing, checkpoints): a
        // diverged run fails before any of them sees its network. (The progress bar's loss and
        // accuracy follow the same cadence; its step count moves every step.)
        if (log.length >= READ_EVERY || endOfEpoch || dynamicsNow || checkpointNow || unfreezer?.actsAfter(step) || job.shouldStop?.()) await settle();
        acc.stepSeconds += (performance.now() - ts) / 1000;
        if (dynamicsNow) await dynamicsRow(epoch + 1);
        await unfreezer?.afterStep(epoch + 1, step);
        if (checkpointNow) {
          await checkpoint({ epoch, step, rng: epochStart, trainableBlocks: trainable.flags, schedule, carry, inEpoch: { pos: s + b, ...acc } });
        }
        bar?.update(Math.ceil((s + b) / bs), acc.seen ? { loss: (acc.lossSum / acc.seen).toFixed(4), acc: (acc.hits / acc.seen).toFixed(3), ips: Math.round(acc.seen / acc.stepSeconds) } : {});
        // Yield to the event loop so signal handlers can run between steps.
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (job.shouldStop?.()) {
          await settle();
          stoppedEarly = true;
          break;
        }
        if (step >= totalSteps) {
          lastEpoch = true;
          break;
        }
      }
      tf.dispose(next ? [next.x, next.y] : []);
      next = null;
      const { lossSum, hits, seen, stepSeconds } = acc;
      bar?.stop();
      if (stoppedEarly) break;
      carry.trainImages += seen;
      carry.trainSeconds += stepSeconds;
      // Time the training thread waited for batches (the pipeline's cost on the critical path).
      carry.batch_wait_seconds = batches.waitedMs / 1000 + (job.resumeFrom?.carry.batch_wait_seconds ?? 0);
      epochLosses.push(lossSum / seen);
      epochLrs.push(learningRate(cfg.train.schedule, cfg.train.lr, Math.max(0, step - 1), totalSteps, warmup));
      // train.until_converged: this epoch is the last once the training loss has plateaued.
      const plateau = cfg.train.until_converged !== null && epoch + 1 < cfg.train.epochs && plateauReached(epochLosses, cfg.train.until_converged.patience, epochLrs);
      if (plateau) {
        lastEpoch = true;
        carry.converged_epoch = epoch + 1;
      }
      if (plateau && dynamicsOn && lastDynamicsStep !== step) await dynamicsRow(epoch + 1);
      const evalNow = (epoch + 1) % cfg.eval.every === 0 || lastEpoch;
      const valAcc = evalNow ? await validate(target, valLabels, cache?.val) : NaN;
      const test: Record<string, number> = evalNow ? await evaluate(target, cache?.test) : {};
      const { improved, stop: stopNow } = await best.update(epoch + 1, valAcc, test, lastEpoch);
      const isFinal = lastEpoch || stopNow;
      const row: Record<string, number> = {
        epoch: epoch + 1,
        step,
        lr: learningRate(cfg.train.schedule, cfg.train.lr, Math.max(0, step - 1), totalSteps, warmup),
        train_loss: lossSum / seen,
        train_acc: hits / seen,
        ...(evalNow ? { val_acc: valAcc, ...test, ...(await alignmentMetrics(net, data, cfg.data.seed)) } : {}),
        // The OOD test once, on the final network.
        ...(isFinal ? await oodMetrics(cfg, net, data, split, job.level, job.heads) : {}),
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
        appendMetrics(runDir, { kind: 'event', event: 'early_stop', epoch: epoch + 1, step, reason: best.reason() });
        out.line(`early stop after epoch ${epoch + 1}: ${best.reason()}; model-best/ holds epoch ${carry.best_epoch}`);
      }
      if (plateau) {
        const reason = `train_loss over the last ${Math.max(cfg.train.until_converged!.patience + 1, 3)}+ epochs spans at most 5 % of its drop since epoch 1 (${epochLosses[0].toPrecision(4)} -> ${epochLosses[epochLosses.length - 1].toPrecision(4)})`;
        appendMetrics(runDir, { kind: 'event', event: 'converged', epoch: epoch + 1, step, reason, ...rowBase() });
        out.line(`converged after epoch ${epoch + 1}: ${reason}`);
      }
      await checkpoint({ epoch: epoch + 1, step, rng: rng.state(), trainableBlocks: trainable.flags, schedule, carry });
      faultAfterCheckpoint(epoch + 1);
      if (stopNow || plateau) break;
    }
  } finally {
    log.dispose();
    if (next) tf.dispose([next.x, next.y]);
    batches.close();
    upload.dispose();
    objective.dispose();
  }
  probes.dispose();
  const final = finalMetrics(carry, last, lastDynamics);
  const trainAccFinal = stoppedEarly ? NaN : await trainAccuracy(target, job.trainLabels, cfg.eval.train_acc_samples, cfg.train.seed, cache?.train);
  // DESIGN.md "Convergence"; the rule is measure/convergence.ts's, stated in README.
  const verdict = convergence({
    losses: epochLosses,
    lrs: epochLrs,
    ...(Number.isFinite(trainAccFinal) ? { trainAcc: trainAccFinal, chance: majorityRate(job.trainLabels, job.heads.runClasses), n: Math.min(n, cfg.eval.train_acc_samples) } : {}),
  });
  const fit = {
    converged: verdict.converged,
    ...(verdict.converged ? {} : { converged_reason: verdict.reason }),
    train_acc_final: trainAccFinal,
    epochs_trained: epochLosses.length,
    train_images: n,
    budget_images: epochLosses.length * n,
  };
  return { final, fit, trainImagesPerSecond: carry.trainSeconds ? carry.trainImages / carry.trainSeconds : 0, stoppedEarly };
}
