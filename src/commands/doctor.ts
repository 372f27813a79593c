import { Command } from 'commander';
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { initEngine } from '../engine/backend';
import { action, commonOptions, withCommonOptions } from './common';

export function doctorCommand(): Command {
  const cmd = new Command('doctor')
    .description('show which backend runs, on how many threads, on what device, and the versions')
    .option('--json', 'machine-readable output (one JSON object)', false);
  withCommonOptions(cmd);
  return cmd.action(
    action(async (o: Record<string, unknown>) => {
      const c = commonOptions(o);
      const e = await initEngine(c.backend, c.threads);
      // A tiny conv training step proves the backend can train, not only load.
      const t0 = performance.now();
      const ok = tf.tidy(() => {
        const x = tf.randomNormal([2, 8, 8, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
        const w = tf.variable(tf.randomNormal([3, 3, 3, 4], 0, 1, 'float32', 2));
        const g = tf.grad((k: tf.Tensor) => tf.conv2d(x, k as tf.Tensor4D, 1, 'same').square().mean())(w as tf.Tensor);
        return Number.isFinite(g.sum().dataSync()[0]);
      });
      const ms = performance.now() - t0;
      if (o.json) {
        const report = {
          backend: e.backend,
          backend_requested: e.requested,
          threads: e.threads,
          kernels: e.kernels,
          native_kernels: e.native ?? null,
          device: e.device,
          conv_training_step: ok ? 'ok' : 'failed',
          conv_training_step_ms: Math.round(ms),
          not_used: e.fallbacks,
          cpus: os.cpus().length,
          cpu_model: os.cpus()[0]?.model ?? null,
          memory_gib: Number((os.totalmem() / 2 ** 30).toFixed(1)),
          versions: e.versions,
        };
        process.stdout.write(JSON.stringify(report, null, 2) + '\n');
        return ok ? 0 : 1;
      }
      const lines = [
        `backend:   ${e.backend}${e.requested === 'auto' ? ' (auto)' : ''}`,
        `threads:   ${e.threads}`,
        `kernels:   ${e.kernels}${e.native ? ` (${e.native}; GRANULAR_NATIVE=0 turns them off)` : ''}`,
        `device:    ${e.device}`,
        `conv training step: ${ok ? 'ok' : 'FAILED'} (${ms.toFixed(0)} ms)`,
        ...e.fallbacks.map((f) => `not used:  ${f}`),
        `cpus:      ${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}, memory ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
        ...Object.entries(e.versions).map(([k, v]) => `${k.padEnd(10)} ${v}`),
      ];
      process.stdout.write(lines.join('\n') + '\n');
      return ok ? 0 : 1;
    }),
  );
}
