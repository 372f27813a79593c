/**
 * The parts of the training loop that keep state across epochs, each in one
 * place, and what the loop takes and returns: where a run starts (fresh or from a checkpoint), the training-dynamics
 * measurements, and the best epoch with early stopping. `loop.ts` drives them.
 */
import * as tf from '@tensorflow/tfjs';
import { Config } from '../config/schema';
import { Dataset } from '../data/types';
import { Split } from '../data/labels/split';
import { dynamicsMetrics } from '../measure/evaluate';
import { makeProbe, Probe } from '../measure/dynamics';
import { coarsenedLogProbs, coarsenMembership } from '../models/objective';
import { Network } from '../models/network';
import { saveModel } from '../runs/run';
import { FILES } from '../runs/rundir';
import { Rng } from '../util/rng';
import { CheckpointState, InEpoch, saveCheckpoint, ScheduleState } from './checkpoint';
import { FinetunePlan, initialTrainable } from './finetune';
import { HeadPlan } from './heads';
import { Level } from '../hierarchy/tree';
import { NamedOptimizer } from './optimizer';

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
  /**
   * Awaited before training pixels are first read (the prefix cache, the
   * dynamics probes, the first step): the training images' stamps, checked on
   * a worker thread while the run started (Dataset.trainVerified).
   */
  dataReady?: () => Promise<void>;
  /** The backend's tensors live in device memory (engine capability deviceMemory): batches go up as uint8 codes where they can (./device-batch.ts). */
  deviceMemory?: boolean;
}

export interface TrainResult {
  final: Record<string, number>;
  /** Whether the run learned its level (DESIGN.md "Convergence") and its training budget. */
  fit: { converged: boolean; converged_reason?: string; train_acc_final: number; epochs_trained: number; train_images: number; budget_images: number };
  trainImagesPerSecond: number;
  /** Stopped by a signal at a step boundary (resumable); not early stopping, which completes the run. */
  stoppedEarly: boolean;
}

/** Where the loop starts: epoch 0 of a new run, or the state a checkpoint saved. */
export interface StartState {
  epoch: number;
  step: number;
  rng: Rng;
  /** Running values carried across epochs (and checkpoints): image counts, seconds, the best epoch. */
  carry: Record<string, number>;
  trainableFlags: boolean[];
  schedule: ScheduleState;
  /** Where a mid-epoch checkpoint (train.checkpoint_every_steps) left off inside its epoch. */
  inEpoch: InEpoch | null;
}

/** The loop's starting state from `resumeFrom` (a loaded checkpoint) or, without one, a fresh run's under `plan`. */
export function startState(cfg: Config, net: Network, plan: FinetunePlan, resumeFrom?: CheckpointState): StartState {
  if (!resumeFrom) {
    return {
      epoch: 0, step: 0, rng: new Rng(cfg.train.seed, 11), carry: { trainImages: 0, trainSeconds: 0 },
      trainableFlags: initialTrainable(net.blocks.length, plan.frozenBlocks, plan.unfreeze, cfg.train.seed),
      schedule: { stopped: false, history: [] }, inEpoch: null,
    };
  }
  const carry: Record<string, number> = { trainImages: 0, trainSeconds: 0, ...resumeFrom.carry };
  // Checkpoints written before summary keys were snake_case.
  if (carry.dynamicsSeconds !== undefined) {
    carry.dynamics_seconds ??= carry.dynamicsSeconds;
    delete carry.dynamicsSeconds;
  }
  return {
    epoch: resumeFrom.epoch, step: resumeFrom.step, rng: new Rng(resumeFrom.rng), carry,
    trainableFlags: resumeFrom.trainableBlocks.slice(),
    schedule: resumeFrom.schedule ?? { stopped: false, history: [] }, inEpoch: resumeFrom.inEpoch ?? null,
  };
}

/**
 * The fixed, seeded probe subsets of the training set that every
 * training-dynamics measurement of a run uses (Fisher trace, sharpness), and
 * the measurement itself (measure/evaluate.ts dynamicsMetrics). With
 * finetune.head: coarsen the probes score the run's predictive distribution,
 * the coarsened one. Call dispose() when the run ends.
 */
export class DynamicsProbes {
  readonly fisher: Probe | null;
  readonly sharp: Probe | null;
  private readonly members: tf.Tensor[] = [];

  constructor(cfg: Config, data: Dataset, split: Split, trainLabels: Int32Array, heads: HeadPlan, plan: FinetunePlan, evalBatch: number) {
    const on = cfg.eval.dynamics_every !== 0;
    const subset = (k: number): Probe => {
      const probe = makeProbe(data.train.x, data.shape, split.train, trainLabels, k, cfg.train.seed, cfg.train.loss, evalBatch);
      if (!heads.headMap) return probe;
      const member = coarsenMembership(heads.headMap, heads.runClasses);
      this.members.push(member);
      return { ...probe, logProbs: (z: tf.Tensor) => coarsenedLogProbs(z, member), numClasses: heads.runClasses };
    };
    // Fisher-ordered unfreezing needs the Fisher probe even when no dynamics rows are written.
    this.fisher = on || plan.unfreeze?.order === 'fisher' ? subset(cfg.eval.fisher_samples) : null;
    this.sharp = on ? subset(cfg.eval.sharpness_examples) : null;
  }

  /** The dynamics metrics of `net` now, with the seconds they took. Only when eval.dynamics_every is on. */
  async measure(net: Network, cfg: Config, reference: ReadonlyMap<string, tf.Tensor> | null): Promise<{ metrics: Record<string, number>; seconds: number }> {
    const t0 = performance.now();
    const metrics = await dynamicsMetrics(net, cfg.eval, cfg.train.seed, this.fisher!, this.sharp!, reference);
    return { metrics, seconds: (performance.now() - t0) / 1000 };
  }

  dispose(): void {
    this.fisher?.x.dispose();
    this.sharp?.x.dispose();
    tf.dispose(this.members);
  }
}

/**
 * The best epoch by val_acc (never the test set) and early stopping
 * (train.early_stop: stop once val_acc has not improved by more than
 * min_delta for `patience` epochs; patience 0 never stops). The best
 * network is saved to RUN_DIR/model-best/. State lives in the loop's
 * checkpointed `carry` (best_epoch, best_val_acc, best_test_acc,
 * stopped_epoch), so a resumed run continues it.
 */
export class BestEpoch {
  constructor(
    private readonly rule: Config['train']['early_stop'],
    private readonly carry: Record<string, number>,
    private readonly net: Network,
    private readonly runDir: string,
  ) {}

  /** Record epoch `epoch`'s val_acc (NaN: not evaluated). Returns whether it is a new best, and whether to stop now (never on the last epoch). */
  async update(epoch: number, valAcc: number, test: Record<string, number>, lastEpoch: boolean): Promise<{ improved: boolean; stop: boolean }> {
    const c = this.carry;
    const improved = Number.isFinite(valAcc) && (c.best_epoch === undefined || valAcc > c.best_val_acc + this.rule.min_delta);
    if (improved) {
      c.best_epoch = epoch;
      c.best_val_acc = valAcc;
      if (test.test_acc !== undefined) c.best_test_acc = test.test_acc;
      await saveModel(this.net, this.runDir, FILES.modelBest);
    }
    const stop = !lastEpoch && this.rule.patience > 0 && Number.isFinite(valAcc) && c.best_epoch !== undefined && epoch - c.best_epoch >= this.rule.patience;
    if (stop) c.stopped_epoch = epoch;
    return { improved, stop };
  }

  /** Why the run stopped early, for the event row and the terminal. */
  reason(): string {
    return `val_acc has not improved on epoch ${this.carry.best_epoch} (${this.carry.best_val_acc.toFixed(4)}) for ${this.rule.patience} epoch(s)`;
  }
}

/**
 * The loop's checkpoint writer: every checkpoint also carries the wall time
 * spent on the run so far (`wall_seconds_done`), so a resumed run's
 * wall_seconds counts every process. `startedAt`: performance.now() when this
 * process started the run. Removes the previous processes' figure from `carry`.
 */
export function checkpointer(job: TrainJob, carry: Record<string, number>, startedAt: number): (st: Omit<CheckpointState, 'version' | 'tensors' | 'optimizer'>) => Promise<void> {
  const wallBefore = job.resumeFrom?.carry.wall_seconds_done ?? 0;
  delete carry.wall_seconds_done;
  return async (st) => {
    await saveCheckpoint(job.runDir, job.net, job.optimizer, job.reference ?? null, { ...st, carry: { ...st.carry, wall_seconds_done: wallBefore + (performance.now() - startedAt) / 1000 } });
  };
}

/**
 * Fault injection for tests: with GRANULAR_FAULT_SIGNAL_AFTER_EPOCH=`N:SIGNAL`
 * (e.g. `3:SIGTERM`), the process sends itself SIGNAL right after writing
 * epoch N's checkpoint, the window between an epoch's last write and the
 * run's end that a poll of checkpoint/state.json cannot hit reliably. Unset:
 * nothing happens.
 */
export function faultAfterCheckpoint(epoch: number): void {
  const spec = process.env.GRANULAR_FAULT_SIGNAL_AFTER_EPOCH;
  if (!spec) return;
  const [at, sig] = spec.split(':');
  if (Number(at) === epoch) process.kill(process.pid, (sig || 'SIGTERM') as NodeJS.Signals);
}

/**
 * Whether the loop decided to end before train.epochs: `carry` (checkpointed
 * with every epoch) records the epoch early stopping stopped at
 * (stopped_epoch) or train.until_converged found the plateau
 * (converged_epoch). Resuming from such a checkpoint must not train on.
 */
export function loopEnded(carry: Record<string, number>): boolean {
  return carry.stopped_epoch !== undefined || carry.converged_epoch !== undefined;
}

/** A run's final metrics for summary.json: the carried values, the last epoch row and dynamics row, and early_stopped (a boolean). */
export function finalMetrics(carry: Record<string, number>, last: Record<string, number>, lastDynamics: Record<string, number>): Record<string, number> {
  const final: Record<string, number | boolean> = { ...carry, ...last, ...lastDynamics, early_stopped: carry.stopped_epoch !== undefined };
  for (const k of ['trainImages', 'trainSeconds', 'num_tensors', 'stopped_epoch', 'converged_epoch']) delete final[k];
  return final as Record<string, number>;
}
