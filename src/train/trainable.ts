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
