/**
 * Training batches onto the device: as floats, or as the pixels' uint8 codes
 * decoded and normalised there.
 *
 * Codes (`c * 256 + byte`, data/store.ts readCodes) go up as int32 (tfjs has
 * no uint8 tensors on webgpu; int32 exists on every backend) and become the
 * network's floats by one gather from a [256 * C] table (data/store.ts
 * codeTable) that holds, for every byte of every channel, the very float the
 * host would have made: x / 255, then (x - mean) / std. A gather copies, so
 * the decoded batch is bit-identical to the host's floats on any backend.
 *
 * Codes are used where the tensors live in device memory (EngineInfo
 * deviceMemory: a GPU), the store holds bytes (records, not the synthetic
 * floats or the frozen-prefix cache) and no random_resized_crop resamples
 * them. On the CPU backends the prefetch worker's floats cost less: the
 * worker normalises off the training thread, while a gather of a 64 x 224 x
 * 224 x 3 batch takes ~1 s on tfjs's cpu kernels.
 * GRANULAR_DEVICE_DECODE=1 uses codes wherever they apply (tests, and checks on
 * a CPU backend), =0 never.
 */
import * as tf from '@tensorflow/tfjs';
import { AugmentKind } from '../data/augment';
import { Batch } from '../data/cache/prefetch';
import { codeTable, PixelStore } from '../data/cache/store';

/** Whether batches of `store` go to the device as codes (see the file comment). */
export function decodeOnDevice(store: PixelStore, augment: readonly AugmentKind[], deviceMemory: boolean): boolean {
  const env = process.env.GRANULAR_DEVICE_DECODE;
  if (env === '0') return false;
  const possible = typeof store.readCodes === 'function' && !augment.includes('random_resized_crop');
  return possible && (deviceMemory || env === '1');
}

/** A batch on the device: x [b, ...shape] float32, y [b] int32. The caller disposes x and y. */
export interface DeviceBatch {
  x: tf.Tensor;
  y: tf.Tensor1D;
  b: number;
}

export class DeviceBatches {
  private readonly table: tf.Tensor1D | null;

  /** `codes`: batches arrive as codes of `store` (its normalisation is the one in force now). */
  constructor(readonly codes: boolean, store: PixelStore, private readonly shape: readonly number[]) {
    this.table = codes ? tf.tensor1d(codeTable(store.norm, store.shape[store.shape.length - 1])) : null;
  }

  /** Make the batch's tensors: the upload starts now (on a GPU the decode is queued behind it). */
  toDevice(batch: Batch): DeviceBatch {
    const { b } = batch;
    const size = this.shape.reduce((a, c) => a * c, 1);
    const y = tf.tensor1d(batch.y.subarray(0, b), 'int32');
    if (!this.table) return { x: tf.tensor(batch.x.subarray(0, b * size), [b, ...this.shape], 'float32'), y, b };
    const table = this.table;
    const x = tf.tidy(() => tf.gather(table, tf.tensor(batch.x.subarray(0, b * size), [b, ...this.shape], 'int32')));
    return { x, y, b };
  }

  dispose(): void {
    this.table?.dispose();
  }
}
