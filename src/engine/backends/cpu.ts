/** tfjs's pure-JavaScript cpu backend: always there, slowest, the reference. */
import * as tf from '@tensorflow/tfjs';
import { EngineModule } from '../types';
import { cpuDevice, hostCapabilities } from './common';

export const cpu: EngineModule = {
  name: 'cpu',
  summary: "tfjs's JavaScript kernels, one thread",
  install: 'it ships with @tensorflow/tfjs',
  async start() {
    if (!(await tf.setBackend('cpu'))) return { unavailable: 'setBackend failed' };
    return { threads: 1, kernels: 'cpu', device: cpuDevice(), guardKernels: true };
  },
  async probe() {
    return { available: true, detail: `1 thread on ${cpuDevice()}` };
  },
  capabilities: () => hostCapabilities('cpu'),
};
