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

/** A step read back: its mean loss (float32) and number of correct predictions. */
export interface StepValues extends StepInfo {
  loss: number;
  hits: number;
}

export class StepLog {
  private pending: Array<{ info: StepInfo; loss: tf.Scalar; hits: tf.Scalar }> = [];

  /** Steps not read yet. */
  get length(): number {
    return this.pending.length;
  }

  /** Keep a step's device scalars (the log owns and disposes them). */
  push(info: StepInfo, values: { loss: tf.Scalar; hits: tf.Scalar }): void {
    this.pending.push({ info, ...values });
  }

  /** Read every pending step in one readback; returns their values in step order and empties the log. */
  async read(): Promise<StepValues[]> {
    const p = this.pending;
    if (!p.length) return [];
    this.pending = [];
    try {
      // [losses..., hits...] in one float32 vector (hit counts <= batch size are exact in float32).
      const packed = tf.tidy(() => tf.concat([tf.stack(p.map((s) => s.loss)), tf.cast(tf.stack(p.map((s) => s.hits)), 'float32')]));
      let v: Float32Array;
      try {
        v = (await packed.data()) as Float32Array;
      } finally {
        packed.dispose();
      }
      return p.map((s, i) => ({ ...s.info, loss: v[i], hits: v[p.length + i] }));
    } finally {
      tf.dispose(p.flatMap((s) => [s.loss, s.hits]));
    }
  }

  /** Drop pending steps unread (a run that ends on an error). */
  dispose(): void {
    tf.dispose(this.pending.flatMap((s) => [s.loss, s.hits]));
    this.pending = [];
  }
}
