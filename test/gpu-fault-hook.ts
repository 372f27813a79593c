/**
 * Preloaded into a CLI run (NODE_OPTIONS=--require) by engine-webgpu.test.ts
 * to provoke a GPU fault mid-run: once RUN_DIR's checkpoint reaches
 * GRANULAR_TEST_GPU_FAULT_EPOCH, `lose` destroys the webgpu device (as a
 * driver reset would) and `invalid` makes a call Dawn rejects (a bind group
 * with a binding its layout lacks). Does nothing without
 * GRANULAR_TEST_GPU_FAULT (the test runner also loads this file as a test).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

const fault = process.env.GRANULAR_TEST_GPU_FAULT;
if (fault) {
  const state = path.join(process.env.GRANULAR_TEST_GPU_FAULT_RUN!, 'checkpoint', 'state.json');
  const epoch = Number(process.env.GRANULAR_TEST_GPU_FAULT_EPOCH ?? 1);
  const timer = setInterval(() => {
    try {
      if (JSON.parse(fs.readFileSync(state, 'utf8')).epoch < epoch) return;
    } catch {
      return; // not written yet, or being swapped in
    }
    // The same tfjs the CLI loaded (one node_modules); getBackend() starts nothing.
    const tf = require('@tensorflow/tfjs');
    if (tf.getBackend() !== 'webgpu') return;
    clearInterval(timer);
    const device = tf.backend().device;
    if (fault === 'lose') device.destroy();
    else device.createBindGroup({ layout: device.createBindGroupLayout({ entries: [] }), entries: [{ binding: 0, resource: { buffer: device.createBuffer({ size: 16, usage: 0x80 }) } }] });
  }, 5);
  timer.unref();
}
