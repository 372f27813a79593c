/** Helpers the backend modules share. */
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { BATCH_NORM_TRAIN, LAYER_NORM } from '../kernel-names';
import { Capabilities } from '../types';

/** Loads a package; returns null, or the first line of why it does not load. */
export function tryRequire(name: string): string | null {
  try {
    require(name);
    return null;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  }
}

/** Whether a package is installed (resolvable), without loading it: null, or why not. */
export function installed(name: string): string | null {
  try {
    require.resolve(name);
    return null;
  } catch {
    return `${name} is not installed`;
  }
}

/** All cores; the wasm backend's pool stops at 8 (the workers its build starts). */
export function defaultThreads(): number {
  return Math.max(1, os.cpus().length);
}

/** "<CPU model> (N cores)". */
export function cpuDevice(): string {
  return `${os.cpus()[0]?.model ?? 'cpu'} (${os.cpus().length} cores)`;
}

/** Whether the fused batch-norm training kernel is registered for `backendName` now. */
export function hasFusedBatchNorm(backendName: string): boolean {
  return tf.getKernel(BATCH_NORM_TRAIN, backendName) !== undefined;
}

/** Whether the fused LayerNorm kernel is registered for `backendName` now. */
export function hasFusedLayerNorm(backendName: string): boolean {
  return tf.getKernel(LAYER_NORM, backendName) !== undefined;
}

/** Capabilities of a backend whose tensors live in ordinary (or wasm) memory. */
export function hostCapabilities(backendName: string, over: Partial<Capabilities> = {}): Capabilities {
  return {
    syncReadback: true,
    maxTensorBytes: null,
    fusedBatchNormTrain: hasFusedBatchNorm(backendName),
    fusedLayerNorm: hasFusedLayerNorm(backendName),
    plainConvTraining: false,
    uint8Tensors: true,
    deviceMemory: false,
    ...over,
  };
}
