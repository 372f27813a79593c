/**
 * The `native` backend (../native-backend): tensors in ordinary memory, the
 * hot kernels from oneDNN through the addon that `npm run build:native`
 * builds (../native-kernels). The default on a machine without a GPU.
 */
import * as tf from '@tensorflow/tfjs';
import { UsageError } from '../../util/errors';
import { EngineModule } from '../types';
import { cpuDevice, defaultThreads, hostCapabilities } from './common';

/** The resume hint of an engine that ran the oneDNN kernels (native and wasm backends). */
export const ONEDNN_AGAIN = " after 'npm run build:native', without GRANULAR_NATIVE=0";

export const native: EngineModule = {
  name: 'native',
  summary: 'oneDNN kernels on tensors in ordinary memory (npm run build:native)',
  install: "Build the kernels with 'npm run build:native' (needs g++ and libdnnl-dev), or use --backend wasm",
  async start(opts) {
    const { registerNativeBackend, NATIVE_BACKEND, memoryLimit } = await import('../native-backend');
    try {
      memoryLimit();
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const asked = opts.threads ?? defaultThreads();
    const r = await registerNativeBackend(asked);
    if (!r.native) return { unavailable: r.why ?? 'failed to initialise' };
    if (!(await tf.setBackend(NATIVE_BACKEND))) return { unavailable: 'setBackend failed' };
    // The count OpenMP took, from "oneDNN 2.6.3 (OpenMP, avx2), 2 threads".
    const threads = Number(/(\d+) threads?$/.exec(r.native)?.[1] ?? asked);
    return { threads, kernels: 'onednn', native: r.native, device: cpuDevice(), guardKernels: true };
  },
  async probe() {
    const { loadOneDnn } = await import('../native-kernels');
    const { addon, why } = loadOneDnn();
    return addon ? { available: true, detail: `${addon.version()} on ${cpuDevice()}` } : { available: false, detail: why ?? 'not built' };
  },
  // Training convolutions as tf.conv2d: same oneDNN kernel, and the images' gradient is skipped.
  capabilities: () => hostCapabilities('native', { plainConvTraining: true }),
  reproduce: () => ONEDNN_AGAIN,
};
