/**
 * What trains during a run: the trainable blocks and their variables (rebuilt
 * whenever a block opens; the schedule that opens them is in finetune.ts), and
 * one optimizer step over the trainable variables.
 */
import * as tf from '@tensorflow/tfjs';
import { NamedVariable, Network } from '../models/network';
import { Objective } from '../models/objective';
import { NamedOptimizer } from './optimizer';

/** The trainable blocks (`flags`, by block index; the head always trains) and their variables. */
export class TrainableSet {
  vars: NamedVariable[] = [];
  private byTfName = new Map<string, string>();
  private varByName = new Map<string, tf.Variable>();
  private lrOf = new Map<string, number>();
  private params = 0;

  /** `from`: the first block that runs (blocks before it are the frozen-prefix cache, whose outputs the batches already are). */
  constructor(private readonly net: Network, readonly flags: boolean[], private readonly lrScale: readonly number[], private readonly from = 0) {
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
   * One optimizer step on a batch already on the device: `x` [b, ...input
   * shape] float32, `y` [b] int32 class indices at the run's level. Forward
   * (batch norm of block i in training mode where `blockTraining[i]`), loss,
   * gradients of the trainable variables, update at `lr` times each block's
   * scale. `objective` says what the loss is (models/objective.ts: plain,
   * coarsened or multi-level).
   *
   * Nothing is read back: the returned scalars (the batch's mean loss,
   * float32, and its number of correct predictions at the run's level, int32)
   * stay on the device for the caller to read in groups (./step-log.ts), and
   * the caller disposes them. So the update is applied whatever the loss: a
   * non-finite loss is found when its group is read, and the run fails then,
   * before anything is measured or saved from the network it left behind.
   */
  step(x: tf.Tensor, y: tf.Tensor1D, blockTraining: boolean[], objective: Objective, optimizer: NamedOptimizer, lr: number): { loss: tf.Scalar; hits: tf.Scalar } {
    let predTensor: tf.Tensor | null = null;
    const { value, grads } = tf.tidy(() =>
      tf.variableGrads(() => {
        const outputs = this.net.forwardAll(x, blockTraining, this.from);
        predTensor = tf.keep(objective.predict(outputs));
        return objective.loss(outputs, y);
      }, this.vars.map((v) => v.variable)),
    );
    try {
      const named = new Map(Object.entries(grads).map(([k, g]) => [this.byTfName.get(k)!, g]));
      optimizer.apply(this.varByName, named, (name) => lr * this.lrOf.get(name)!);
      const hits = tf.tidy(() => tf.sum(tf.equal(predTensor as unknown as tf.Tensor, y)));
      return { loss: value, hits: hits as tf.Scalar };
    } finally {
      tf.dispose([predTensor!, ...Object.values(grads)]);
    }
  }

  /** Learning-rate multiplier of a trainable variable (layer-wise decay), undefined for one that does not train. */
  lrScaleOf(name: string): number | undefined {
    return this.lrOf.get(name);
  }

  private refresh(): void {
    this.vars = this.net.variables().filter((v) => v.trainable && (v.block < 0 || this.flags[v.block]));
    this.byTfName = new Map(this.vars.map((v) => [v.variable.name, v.name]));
    this.varByName = new Map(this.vars.map((v) => [v.name, v.variable]));
    this.lrOf = new Map(this.vars.map((v) => [v.name, v.block < 0 || v.headRate ? 1 : this.lrScale[v.block]]));
    this.params = this.net.paramCount(this.flags);
  }
}
