/**
 * The training batch pipeline: batch t+1 is gathered (and augmented) on a
 * worker thread while step t trains, into a ring of preallocated shared
 * buffers, so the training thread only waits when the worker falls behind.
 *
 * Both sides run the same `fillBatch`, so a prefetched batch is bit-identical
 * to one made in place (GRANULAR_PREFETCH=0 makes them in place, for tests and
 * for machines where a worker thread cannot start).
 *
 * Protocol: `status[k]` of ring slot k is FREE or READY (Int32Array over a
 * SharedArrayBuffer, Atomics.wait/notify on both sides). An epoch plan (the
 * example index and label of every position, the first global step) goes to
 * the worker by message; it fills slots in order, waiting for each to be FREE.
 */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Rng } from '../../util/rng';
import { augmentBatch, AugmentKind } from '../augment';
import { PixelStore, StoreSpec } from './store';
import { sharedFloat32 } from '../types';

export const FREE = 0;
export const READY = 1;
/** Bytes of the shared buffer in which a failing worker leaves its error message. */
export const ERROR_BYTES = 1024;
/** Ring slots: one being trained on, one being filled, one spare to absorb jitter. */
const SLOTS = 3;

/** What makes batch number `step` of an epoch plan, on either thread. */
export interface BatchSpec {
  /** Per example: floats of one input (H*W*C, or the cached prefix's features). */
  size: number;
  /** [H, W, C] for augmentation (only used when `augment` is non-empty). */
  shape: [number, number, number];
  augment: AugmentKind[];
  /**
   * train.seed: random resized crops draw from Rng(seed * 1_000_003 + step, 23),
   * flips and shifts from Rng(seed * 1_000_003 + step, 19).
   */
  seed: number;
  /**
   * Make batches of uint8 codes (PixelStore.readCodes: `c * 256 + byte`,
   * Int32Array) for decoding and normalising on the device (train/device-batch.ts)
   * instead of floats. Only for stores that have readCodes, without
   * random_resized_crop (which resamples: its values are not bytes).
   */
  codes?: boolean;
}

/**
 * Read examples `index[from .. from+b)` of the store into `x` in their
 * training view (random resized crops if asked), their labels into `y`, then
 * flip/shift them and normalise, as training step `step` does. With
 * `spec.codes`, `x` is an Int32Array and receives the pixels' codes, flipped
 * and shifted alike, not normalised (the device does that).
 */
export function fillBatch(store: PixelStore, spec: BatchSpec, index: Int32Array, labels: Int32Array, from: number, b: number, step: number, x: Float32Array | Int32Array, y: Int32Array): void {
  const rrc = spec.augment.includes('random_resized_crop') ? new Rng(spec.seed * 1_000_003 + step, 23) : null;
  if (spec.codes) {
    if (rrc || !store.readCodes || !(x instanceof Int32Array)) throw new Error('fillBatch: codes need a store of bytes, an Int32Array and no random_resized_crop');
    store.readCodes(index, from, b, x);
  } else store.readTrain(index, from, b, x as Float32Array, rrc);
  for (let i = 0; i < b; i++) y[i] = labels[from + i];
  const rest = spec.augment.filter((k) => k !== 'random_resized_crop');
  if (rest.length) augmentBatch(x, b, spec.shape, rest, new Rng(spec.seed * 1_000_003 + step, 19));
  if (!spec.codes) store.normalize(x as Float32Array, b);
}

export interface Batch {
  /** Floats as the network takes them, or (BatchSpec.codes) the pixels' uint8 codes. */
  x: Float32Array | Int32Array;
  y: Int32Array;
  b: number;
}

/** Hands out an epoch's batches in order. */
export interface BatchSource {
  /** Start an epoch: positions `from..` of (index, labels), the first batch being global step `step`. */
  epoch(index: Int32Array, labels: Int32Array, from: number, step: number): void;
  /** The next batch; valid until the next call. */
  next(): Batch;
  /** Milliseconds the training thread spent waiting for or making batches. */
  waitedMs: number;
  close(): void;
}

/** Makes each batch on the calling thread (GRANULAR_PREFETCH=0, or no worker). */
export class InlineBatches implements BatchSource {
  private readonly x: Float32Array | Int32Array;
  private readonly y: Int32Array;
  private index: Int32Array = new Int32Array(0);
  private labels: Int32Array = new Int32Array(0);
  private pos = 0;
  private step = 0;
  waitedMs = 0;
  constructor(private readonly X: PixelStore, private readonly spec: BatchSpec, private readonly bs: number) {
    this.x = spec.codes ? new Int32Array(bs * spec.size) : new Float32Array(bs * spec.size);
    this.y = new Int32Array(bs);
  }
  epoch(index: Int32Array, labels: Int32Array, from: number, step: number): void {
    this.index = index;
    this.labels = labels;
    this.pos = from;
    this.step = step;
  }
  next(): Batch {
    const t0 = performance.now();
    const b = Math.min(this.bs, this.index.length - this.pos);
    if (b <= 0) throw new Error('InlineBatches: the epoch has no more batches');
    fillBatch(this.X, this.spec, this.index, this.labels, this.pos, b, this.step, this.x, this.y);
    this.pos += b;
    this.step++;
    this.waitedMs += performance.now() - t0;
    return { x: this.x, y: this.y, b };
  }
  close(): void {}
}

/** Messages to the worker. */
export type PrefetchMessage =
  | { kind: 'init'; store: StoreSpec; spec: BatchSpec; bs: number; xs: SharedArrayBuffer; ys: SharedArrayBuffer; status: SharedArrayBuffer; slots: number }
  | { kind: 'epoch'; index: Int32Array; labels: Int32Array; from: number; step: number; slot: number; epochId: number };

/** Prefetches on a worker thread into a ring of shared buffers. */
export class PrefetchedBatches implements BatchSource {
  private readonly worker: Worker;
  private readonly xs: Float32Array | Int32Array;
  private readonly ys: Int32Array;
  private readonly status: Int32Array;
  private readonly per: number;
  private slot = 0;
  private pos = 0;
  private length = 0;
  private epochId = 0;
  waitedMs = 0;

  constructor(X: PixelStore, spec: BatchSpec, private readonly bs: number) {
    // Records are read by the worker itself; floats are shared without a copy when
    // they already live in shared memory (see sharedFloat32).
    let store = X.spec();
    if (store.kind === 'floats' && !(store.x.buffer instanceof SharedArrayBuffer)) {
      const c = sharedFloat32(store.x.length);
      c.set(store.x);
      store = { ...store, x: c };
    }
    this.per = bs * spec.size;
    const xs = new SharedArrayBuffer(SLOTS * this.per * 4);
    const ys = new SharedArrayBuffer(SLOTS * bs * 4);
    // Slot states, then an error flag, then room for the worker's error message (UTF-8).
    const status = new SharedArrayBuffer((SLOTS + 1) * 4 + ERROR_BYTES);
    this.xs = spec.codes ? new Int32Array(xs) : new Float32Array(xs);
    this.ys = new Int32Array(ys);
    this.status = new Int32Array(status);
    this.worker = new Worker(path.join(__dirname, 'prefetch-worker.js'));
    this.worker.unref();
    // A failure inside the worker is flagged in `status` (next() throws); this keeps it from being an unhandled 'error' event.
    this.worker.on('error', () => Atomics.store(this.status, SLOTS, 1));
    this.worker.postMessage({ kind: 'init', store, spec, bs, xs, ys, status, slots: SLOTS } satisfies PrefetchMessage);
  }

  epoch(index: Int32Array, labels: Int32Array, from: number, step: number): void {
    // Every batch of the previous plan has been taken, so the worker is idle and
    // starts this plan at the slot the training thread reads next.
    this.epochId++;
    this.pos = from;
    this.length = index.length;
    this.worker.postMessage({ kind: 'epoch', index, labels, from, step, slot: this.slot, epochId: this.epochId } satisfies PrefetchMessage);
  }

  next(): Batch {
    const b = Math.min(this.bs, this.length - this.pos);
    if (b <= 0) throw new Error('PrefetchedBatches: the epoch has no more batches');
    const t0 = performance.now();
    const k = this.slot;
    // The slot before this one is released now: its batch has been turned into a tensor.
    const prev = (k + SLOTS - 1) % SLOTS;
    if (Atomics.load(this.status, prev) === READY + 1) {
      Atomics.store(this.status, prev, FREE);
      Atomics.notify(this.status, prev);
    }
    while (Atomics.load(this.status, k) !== READY) {
      const err = Atomics.load(this.status, SLOTS);
      if (err) {
        const text = new Uint8Array(this.status.buffer, (SLOTS + 1) * 4, ERROR_BYTES);
        const why = Buffer.from(text.subarray(0, Math.max(0, text.indexOf(0)))).toString('utf8');
        throw new Error(`the batch prefetch worker failed: ${why || 'no reason given'}. (GRANULAR_PREFETCH=0 makes batches in place, for a second opinion.)`);
      }
      Atomics.wait(this.status, k, FREE, 1000);
    }
    // Mark it in use (READY + 1) until the next call hands it back.
    Atomics.store(this.status, k, READY + 1);
    this.slot = (k + 1) % SLOTS;
    this.pos += b;
    this.waitedMs += performance.now() - t0;
    return { x: this.xs.subarray(k * this.per, (k + 1) * this.per), y: this.ys.subarray(k * this.bs, (k + 1) * this.bs), b };
  }

  close(): void {
    void this.worker.terminate();
  }
}

/** The pipeline for a training run: prefetching unless GRANULAR_PREFETCH=0. */
export function batchSource(X: PixelStore, spec: BatchSpec, bs: number): BatchSource {
  if (process.env.GRANULAR_PREFETCH === '0') return new InlineBatches(X, spec, bs);
  return new PrefetchedBatches(X, spec, bs);
}
