/**
 * The native TensorFlow binding (@tensorflow/tfjs-node-gpu with CUDA, else
 * @tensorflow/tfjs-node), when installed. Neither is by default: their
 * install downloads libtensorflow, and the GPU build needs CUDA 11.2.
 */
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { EngineModule } from '../types';
import { defaultThreads, hostCapabilities, installed, tryRequire } from './common';

export const tensorflow: EngineModule = {
  name: 'tensorflow',
  summary: 'libtensorflow through @tensorflow/tfjs-node(-gpu), when installed',
  install: "Install it with 'npm install @tensorflow/tfjs-node-gpu' (CUDA machines) or 'npm install @tensorflow/tfjs-node', or use --backend webgpu, native or wasm",
  async start(opts) {
    const gpu = tryRequire('@tensorflow/tfjs-node-gpu');
    const cpu = gpu === null ? null : tryRequire('@tensorflow/tfjs-node');
    if (gpu !== null && cpu !== null) return { unavailable: `not installed (@tensorflow/tfjs-node-gpu: ${gpu}; @tensorflow/tfjs-node: ${cpu})` };
    if (!(await tf.setBackend('tensorflow'))) return { unavailable: 'setBackend failed' };
    const b = tf.backend() as unknown as { isUsingGpuDevice?: boolean };
    // libtensorflow runs its own thread pools: trusted with what was asked.
    return {
      threads: opts.threads ?? defaultThreads(),
      kernels: 'tensorflow',
      device: b.isUsingGpuDevice ? 'GPU (CUDA via libtensorflow)' : `CPU via libtensorflow (${os.cpus().length} cores)`,
      // Its kernels report failures themselves.
      guardKernels: false,
    };
  },
  async probe() {
    const missing = [installed('@tensorflow/tfjs-node-gpu'), installed('@tensorflow/tfjs-node')];
    const name = missing[0] === null ? '@tensorflow/tfjs-node-gpu' : missing[1] === null ? '@tensorflow/tfjs-node' : null;
    return name ? { available: true, detail: `${name} installed (loads libtensorflow when started)` } : { available: false, detail: missing.join('; ') };
  },
  // CUDA keeps tensors in GPU memory: batches go up as uint8 codes there.
  capabilities: () => hostCapabilities('tensorflow', { deviceMemory: (tf.backend() as unknown as { isUsingGpuDevice?: boolean }).isUsingGpuDevice === true }),
};
