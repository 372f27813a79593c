import { Hierarchy } from '../hierarchy/tree';
import { ChannelsDecision } from './labels/channels';
import { DuplicatesRecord } from './labels/duplicates';
import { PixelStore } from './cache/store';

/** A set of examples: labels and ids in memory, pixels in a store (in memory or the on-disk record cache). */
export interface Examples {
  /** Pixels, read by example index (./cache/store.ts). */
  x: PixelStore;
  /** Dataset class index (into Hierarchy.classes) per example. */
  y: Int32Array;
  /** Stable example ids (split.json records them). */
  ids: string[];
  /** 1 where the example is "hard" (synthetic: lacks the coarsest features). */
  hard?: Uint8Array;
  /** Content hash of each example's image file (file-based formats), HASH_BYTES per example, for overlap checks across datasets (see hashHex). */
  hashes?: Uint8Array;
}

export interface Dataset {
  hierarchy: Hierarchy;
  /** [height, width, channels] of every example. */
  shape: [number, number, number];
  train: Examples;
  test: Examples;
  /** For synthetic data: the true feature directions per depth (1 = coarsest), each [count x dim]. */
  features?: { byDepth: Float32Array[]; dim: number };
  /** Examples skipped while loading (unreadable files). */
  skipped: number;
  /** How data.channels was settled (file-based formats; `auto` decided from the training images' headers). */
  channels?: ChannelsDecision;
  /** The dataset's own duplicates and what data.duplicates did with them (file-based formats). */
  duplicates?: DuplicatesRecord;
  /** Per test example: 1 when its content is in the dataset's training pool (only data.duplicates=keep leaves such images in). */
  testInTrain?: Uint8Array;
  /** Test ids data.duplicates=drop_test left out, with their content hash (a split recorded before the policy may still name them). */
  duplicateTestIds?: ReadonlyMap<string, string>;
  /** How data.relabel changed the labels, when it needs recording (cluster:K); hierarchy.json holds it. */
  relabelRecord?: Record<string, unknown>;
  /** Set when fine-tuning on other data than the source run's: its overlap by content hash (split.json records it). */
  sourceOverlap?: SourceOverlap;
  /**
   * Present when the training images' stamps are being checked in the
   * background (LoadOptions.deferTrainStamps): resolves, once they are checked
   * (and any that changed decoded again, their records and hashes replaced in
   * train), to how many changed. Await it before reading training pixels.
   * Rejects with TrainImagesBroken (./cache/catalog) when a changed image can no
   * longer be decoded: load the dataset again, without deferring.
   */
  trainVerified?: () => Promise<number>;
}

export interface SourceOverlap {
  /** Target examples whose image file also is in the source run's training set. */
  test_in_source_train: number;
  train_in_source_train: number;
  /** A few of the overlapping target test ids. */
  test_examples: string[];
  source_train_checked: number;
}

/** The content hash of example i as 16 hex digits (decode.ts contentHash). */
export function hashHex(hashes: Uint8Array, i: number): string {
  return Buffer.from(hashes.buffer, hashes.byteOffset + i * 8, 8).toString('hex');
}

/**
 * A Float32Array on a SharedArrayBuffer. Example pixels live in one, so the
 * batch prefetch worker (./cache/prefetch.ts) reads them without a copy.
 */
export function sharedFloat32(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(n * Float32Array.BYTES_PER_ELEMENT));
}
