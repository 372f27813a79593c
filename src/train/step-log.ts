/**
 * The training steps' losses and hit counts, read back from the device in
 * groups instead of after every step.
 *
 * Why: a backend whose tensors live on a GPU has no synchronous readback
 * (tfjs's webgpu backend throws on dataSync()), and waiting for one scalar
 * after every step stalls the device once per step. Each step's loss and
 * hit count stay on the device until the loop reads the pending steps
 * together (one `await data()` for all of them); the loop reads every
 * READ_EVERY steps and before anything that needs them (see loop.ts).
 *
 * Every step's own values come back (not a sum taken on the device), so the
 * loop accumulates them on the host in float64, in step order, exactly as it
 * did when it read each step: train_loss and train_acc are bit-identical, and
 * a non-finite loss is still pinned to the step that produced it.
 *
 * A step's hits are counted here, on the host: its predicted classes come back
 * with the losses and are compared with the labels the host kept. No Equal
 * kernel runs on the device (on the CPU backends tfjs's generic binary
 * kernel, shared with the training step's own comparisons, slowed them down:
 * see TrainableSet.step).
 */
import * as tf from '@tensorflow/tfjs';

/**
 * Steps whose values may wait on the device before the loop reads them: the
 * cadence of the NaN check and of the progress bar's loss. Small enough that a
 * diverged run stops within a few seconds, large enough that the device runs
 * ahead of the host.
 */
export const READ_EVERY = 16;

/** One step as the loop saw it: its batch size, 1-based epoch and global step, and learning rate. */
export interface StepInfo {
  b: number;
  epoch: number;
  step: number;
  lr: number;
}

/** A step read back: its mean loss (float32) and number of correct predictions (counted on the host). */
export interface StepValues extends StepInfo {
  loss: number;
  hits: number;
}

export class StepLog {
  private pending: Array<{ info: StepInfo; loss: tf.Scalar; pred: tf.Tensor1D; labels: Int32Array }> = [];

  /** Steps not read yet. */
  get length(): number {
    return this.pending.length;
  }

  /**
   * Keep a step's device tensors (the log owns and disposes them): its loss
   * (float32 scalar) and predicted classes (int32 [b]), with the batch's true
   * classes on the host (`labels`, length b, not copied: the caller must not
   * reuse the array).
   */
  push(info: StepInfo, values: { loss: tf.Scalar; pred: tf.Tensor1D }, labels: Int32Array): void {
    if (values.pred.size !== info.b || labels.length !== info.b) {
      tf.dispose([values.loss, values.pred]);
      throw new Error(`step ${info.step}: ${values.pred.size} predictions and ${labels.length} labels for a batch of ${info.b}`);
    }
    this.pending.push({ info, ...values, labels });
  }

  /** Read every pending step in one readback; returns their values in step order and empties the log. */
  async read(): Promise<StepValues[]> {
    const p = this.pending;
    if (!p.length) return [];
    this.pending = [];
    try {
      // The losses (float32) and the predictions (int32), each in one vector; both reads in flight together.
      const losses = tf.stack(p.map((s) => s.loss));
      const preds = p.length === 1 ? p[0].pred : tf.concat(p.map((s) => s.pred));
      let l: Float32Array;
      let pr: Int32Array;
      try {
        [l, pr] = (await Promise.all([losses.data(), preds.data()])) as [Float32Array, Int32Array];
      } finally {
        tf.dispose(preds === p[0].pred ? [losses] : [losses, preds]);
      }
      let at = 0;
      return p.map((s, i) => {
        let hits = 0;
        for (let k = 0; k < s.info.b; k++) if (pr[at + k] === s.labels[k]) hits++;
        at += s.info.b;
        return { ...s.info, loss: l[i], hits };
      });
    } finally {
      tf.dispose(p.flatMap((s) => [s.loss, s.pred]));
    }
  }

  /** Drop pending steps unread (a run that ends on an error). */
  dispose(): void {
    tf.dispose(this.pending.flatMap((s) => [s.loss, s.pred]));
    this.pending = [];
  }
}
