import { Command } from 'commander';
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { AdapterRecord, engineCapabilities, initEngine, mib, probeBackends } from '../engine';
import { action, commonOptions, withCommonOptions } from './common';

/**
 * One small training step (3x3 convolution, ReLU, global average, dense
 * layer, softmax cross-entropy; gradients of both weights) on the engine,
 * read back with `await data()` as the training loop does (a GPU backend has
 * no synchronous readback). Returns whether the gradients are finite and the
 * milliseconds of the first step (shader compilation and uploads included on
 * a GPU) and of the fastest of three more.
 */
async function timeTrainingStep(): Promise<{ ok: boolean; firstMs: number; warmMs: number }> {
  const x = tf.randomNormal([8, 16, 16, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
  const labels = tf.oneHot(tf.tensor1d([0, 1, 2, 3, 0, 1, 2, 3], 'int32'), 4);
  const k = tf.variable(tf.randomNormal([3, 3, 3, 8], 0, 0.3, 'float32', 2));
  const w = tf.variable(tf.randomNormal([8, 4], 0, 0.3, 'float32', 3));
  const loss = () => tf.losses.softmaxCrossEntropy(labels, tf.matMul(tf.relu(tf.conv2d(x, k as tf.Tensor4D, 1, 'same')).mean([1, 2]), w)) as tf.Scalar;
  const step = async (): Promise<{ ok: boolean; ms: number }> => {
    const t0 = performance.now();
    const { value, grads } = tf.variableGrads(loss, [k, w]);
    const sums = tf.tidy(() => tf.stack([value, grads[k.name].sum(), grads[w.name].sum()]));
    const v = await sums.data();
    tf.dispose([value, sums, ...Object.values(grads)]);
    return { ok: Array.from(v).every(Number.isFinite), ms: performance.now() - t0 };
  };
  try {
    const first = await step();
    const warm = [await step(), await step(), await step()];
    return { ok: first.ok && warm.every((s) => s.ok), firstMs: first.ms, warmMs: Math.min(...warm.map((s) => s.ms)) };
  } finally {
    tf.dispose([x, labels, k, w]);
  }
}

function adapterLines(a: AdapterRecord, indent: string): string[] {
  const limit = (v: number | undefined) => (v === undefined ? '?' : v >= 2 ** 20 ? mib(v) : String(v));
  return [
    `${indent}vendor ${a.vendor || '?'}, architecture ${a.architecture || '?'}, device ${a.device || '?'}`,
    `${indent}driver ${a.description || '?'}${a.fallback ? ' (software/fallback adapter: never picked by --backend auto)' : ' (hardware)'}`,
    `${indent}largest tensor (maxStorageBufferBindingSize) ${limit(a.limits.maxStorageBufferBindingSize)}, maxBufferSize ${limit(a.limits.maxBufferSize)}, workgroup storage ${limit(a.limits.maxComputeWorkgroupStorageSize)} B, ${limit(a.limits.maxComputeInvocationsPerWorkgroup)} invocations per workgroup`,
  ];
}

export function doctorCommand(): Command {
  const cmd = new Command('doctor')
    .description('show which backend runs, on how many threads, on what device (the GPU adapter and its limits), what every other backend would use, and the versions; times a training step')
    .option('--json', 'machine-readable output (one JSON object)', false);
  withCommonOptions(cmd);
  return cmd.action(
    action(async (o: Record<string, unknown>) => {
      const c = commonOptions(o);
      const e = await initEngine(c.backend, c.threads);
      // A small training step proves the backend can train, not only load.
      const step = await timeTrainingStep();
      const backends = await probeBackends();
      const caps = engineCapabilities();
      if (o.json) {
        const report = {
          backend: e.backend,
          backend_requested: e.requested,
          threads: e.threads,
          kernels: e.kernels,
          native_kernels: e.native ?? null,
          device: e.device,
          adapter: e.adapter ?? null,
          capabilities: caps,
          training_step: step.ok ? 'ok' : 'failed',
          training_step_first_ms: Number(step.firstMs.toFixed(1)),
          training_step_ms: Number(step.warmMs.toFixed(1)),
          // Kept from before the step was a training step of a small network.
          conv_training_step: step.ok ? 'ok' : 'failed',
          conv_training_step_ms: Math.round(step.warmMs),
          backends,
          not_used: e.fallbacks,
          cpus: os.cpus().length,
          cpu_model: os.cpus()[0]?.model ?? null,
          memory_gib: Number((os.totalmem() / 2 ** 30).toFixed(1)),
          versions: e.versions,
        };
        process.stdout.write(JSON.stringify(report, null, 2) + '\n');
        return step.ok ? 0 : 1;
      }
      const lines = [
        `backend:   ${e.backend}${e.requested === 'auto' ? ' (auto)' : ''}`,
        `threads:   ${e.threads}`,
        `kernels:   ${e.kernels}${e.native ? ` (${e.native}; GRANULAR_NATIVE=0 turns them off)` : ''}`,
        `device:    ${e.device}`,
        ...(e.adapter ? ['adapter:', ...adapterLines(e.adapter, '  ')] : []),
        `readback:  ${caps.syncReadback ? 'synchronous and asynchronous' : 'asynchronous only'}; largest tensor ${caps.maxTensorBytes === null ? 'limited by memory' : mib(caps.maxTensorBytes)}`,
        `training step: ${step.ok ? 'ok' : 'FAILED'} (first ${step.firstMs.toFixed(0)} ms, then ${step.warmMs.toFixed(1)} ms; 8 images of 16x16, conv + dense)`,
        'backends (--backend auto tries them in this order):',
        ...backends.flatMap((b) => [
          `  ${b.active ? '*' : b.available ? '+' : '-'} ${b.name.padEnd(10)} ${b.active ? 'in use: ' : b.available ? 'available: ' : 'unavailable: '}${b.detail}`,
          ...(b.adapter && !b.active ? adapterLines(b.adapter, '      ') : []),
        ]),
        ...e.fallbacks.map((f) => `not used:  ${f}`),
        `cpus:      ${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}, memory ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
        ...Object.entries(e.versions).map(([k, v]) => `${k.padEnd(10)} ${v}`),
      ];
      process.stdout.write(lines.join('\n') + '\n');
      return step.ok ? 0 : 1;
    }),
  );
}
