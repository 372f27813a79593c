/**
 * What trains during a run, and how it changes: the trainable blocks and their
 * variables (rebuilt whenever a block opens), the gradual-unfreezing schedule
 * with its stop rules, and one optimizer step over the trainable variables.
 */
import * as tf from '@tensorflow/tfjs';
import { Config } from '../config/schema';
import { fisherTrace, Probe } from '../measure/dynamics';
import { NamedVariable, Network } from '../models/network';
import { appendMetrics } from '../runs/rundir';
import { ScheduleState } from './checkpoint';
import { Objective } from '../models/objective';
import { NamedOptimizer } from './optimizer';
import { fixedStopMet, metricStopMet, metricStopReason, openingOrder, opensAfter, UnfreezeConfig } from './unfreeze';

/** The trainable blocks (`flags`, by block index; the head always trains) and their variables. */
export class TrainableSet {
  vars: NamedVariable[] = [];
  private byTfName = new Map<string, string>();
  private varByName = new Map<string, tf.Variable>();
  private lrOf = new Map<string, number>();
  private params = 0;

  constructor(private readonly net: Network, readonly flags: boolean[], private readonly lrScale: readonly number[]) {
    this.refresh();
  }

  open(block: number): void {
    this.flags[block] = true;
    this.refresh();
  }

  /** trainable_blocks and trainable_params, as every metrics row carries them. */
  row(): { trainable_blocks: number; trainable_params: number } {
    return { trainable_blocks: this.flags.filter(Boolean).length, trainable_params: this.params };
  }

  /**
   * One optimizer step on a batch: forward (batch norm of block i in training
   * mode where `blockTraining[i]`), loss, gradients of the trainable variables,
   * update at `lr` times each block's scale. Returns the loss and the number of
   * correct predictions at the run's level; a non-finite loss updates
   * nothing. `objective` says what the loss is (models/objective.ts: plain,
   * coarsened or multi-level).
   */
  step(x: Float32Array, y: Int32Array, b: number, shape: readonly number[], from: number, blockTraining: boolean[], objective: Objective, optimizer: NamedOptimizer, lr: number): { loss: number; hits: number } {
    const size = shape.reduce((a, c) => a * c, 1);
    let predTensor: tf.Tensor | null = null;
    const { value, grads } = tf.tidy(() => {
      const xt = tf.tensor(x.subarray(0, b * size), [b, ...shape]);
      const yt = tf.tensor1d(y.subarray(0, b), 'int32');
      return tf.variableGrads(() => {
        const outputs = this.net.forwardAll(xt, blockTraining, from);
        predTensor = tf.keep(objective.predict(outputs));
        return objective.loss(outputs, yt);
      }, this.vars.map((v) => v.variable));
    });
    try {
      const lossValue = value.dataSync()[0];
      if (!Number.isFinite(lossValue)) return { loss: lossValue, hits: 0 };
      const named = new Map(Object.entries(grads).map(([k, g]) => [this.byTfName.get(k)!, g]));
      optimizer.apply(this.varByName, named, (name) => lr * this.lrOf.get(name)!);
      const pred = (predTensor as unknown as tf.Tensor).dataSync();
      let hits = 0;
      for (let i = 0; i < b; i++) if (pred[i] === y[i]) hits++;
      return { loss: lossValue, hits };
    } finally {
      tf.dispose([value, predTensor!, ...Object.values(grads)]);
    }
  }

  private refresh(): void {
    this.vars = this.net.variables().filter((v) => v.trainable && (v.block < 0 || this.flags[v.block]));
    this.byTfName = new Map(this.vars.map((v) => [v.variable.name, v.name]));
    this.varByName = new Map(this.vars.map((v) => [v.name, v.variable]));
    this.lrOf = new Map(this.vars.map((v) => [v.name, v.block < 0 ? 1 : this.lrScale[v.block]]));
    this.params = this.net.paramCount(this.flags);
  }
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
    private readonly ctx: { net: Network; runDir: string; frozenBlocks: number; seed: number; stepsPerEpoch: number; fisherProbe: Probe | null },
  ) {}

  /** After a dynamics row: the metric stop rule looks at its measure. */
  observe(m: Record<string, number>, epoch: number, step: number): void {
    const stop = this.u.stop;
    if (!stop || !('metric' in stop) || this.schedule.stopped) return;
    this.schedule.history.push(m[stop.metric]);
    if (metricStopMet(this.u, this.schedule.history)) this.stop(epoch, step, metricStopReason(this.u, this.schedule.history));
  }

  /** After each step: stop on a fixed step/epoch, or open the next block when it is due. */
  afterStep(epoch: number, step: number): void {
    if (this.schedule.stopped) return;
    if (fixedStopMet(this.u, step, this.ctx.stepsPerEpoch)) return this.stop(epoch, step, `reached ${JSON.stringify(this.u.stop)}`);
    if (!opensAfter(this.u, step, this.ctx.stepsPerEpoch)) return;
    const { net, seed } = this.ctx;
    const closed = openingOrder(net.blocks.length, this.ctx.frozenBlocks, this.u.order, seed).filter((b) => !this.trainable.flags[b]);
    if (!closed.length) return;
    let pick = closed[0];
    let why: string = this.u.order;
    if (this.u.order === 'fisher') {
      const per = fisherTrace(net, this.ctx.fisherProbe!, true, seed).perBlock;
      pick = closed.reduce((a, b) => ((per[net.blocks[b].name] ?? 0) > (per[net.blocks[a].name] ?? 0) ? b : a));
      why = `fisher (fisher_trace@${net.blocks[pick].name} = ${(per[net.blocks[pick].name] ?? 0).toPrecision(4)})`;
    }
    this.trainable.open(pick);
    appendMetrics(this.ctx.runDir, { kind: 'event', event: 'unfreeze', block: net.blocks[pick].name, order: why, epoch, step, ...this.trainable.row() });
  }

  private stop(epoch: number, step: number, reason: string): void {
    this.schedule.stopped = true;
    appendMetrics(this.ctx.runDir, { kind: 'event', event: 'unfreeze_stop', epoch, step, reason, ...this.trainable.row() });
  }
}
