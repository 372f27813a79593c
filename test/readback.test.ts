import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { evalCommand } from '../src/commands/eval';
import { runStage } from '../src/train/stage';
import { QUICKSTART, metricRows, tmpDir, TINY } from './helpers';

/**
 * Every synchronous readback (Tensor.dataSync, arraySync, bufferSync, and
 * anything else that reads through the engine's readSync) made while `fn`
 * runs, with where it came from. A GPU backend has none (tfjs's webgpu
 * backend throws), so a run must not make any.
 */
async function syncReadsDuring(fn: () => Promise<void>): Promise<string[]> {
  const engine = tf.engine();
  const original = engine.readSync;
  const seen: string[] = [];
  engine.readSync = function (this: typeof engine, dataId: Parameters<typeof original>[0]) {
    const where = (new Error().stack ?? '').split('\n').slice(2).filter((l) => l.includes('/dist/src/')).slice(0, 3).map((l) => l.trim());
    seen.push(where.join(' <- ') || 'outside granular');
    return original.call(this, dataId);
  };
  try {
    await fn();
  } finally {
    engine.readSync = original;
  }
  return seen;
}

test('a pretrain, two finetunes (prefix cache; Fisher-ordered unfreezing) and an eval read nothing back synchronously', async () => {
  const root = tmpDir();
  const common = { backend: 'auto' as const, quiet: true, silent: true, argv: ['test'] };
  const runs: Array<{ exitCode: number; runDir: string; summary: Record<string, unknown> }> = [];
  let evalCode: number | undefined;
  const reads = await syncReadsDuring(async () => {
    // Dynamics rows (Fisher trace, sharpness, weight distances), mid-epoch and epoch checkpoints, model-best/, OOD, alignment.
    const pre = await runStage({ ...common, stage: 'pretrain', configFile: QUICKSTART, sets: [...TINY.filter((s) => s !== '--set'), 'train.checkpoint_every_steps=2', 'eval.dynamics_every=2'], runDir: path.join(root, 'pre') });
    runs.push(pre);
    if (pre.exitCode !== 0) return;
    // Frozen-prefix cache (linear probe).
    runs.push(await runStage({ ...common, stage: 'finetune', from: pre.runDir, freeze: 'all', sets: ['train.epochs=2'], runDir: path.join(root, 'probe') }));
    // Gradual unfreezing by Fisher trace (measured when a block opens).
    runs.push(await runStage({ ...common, stage: 'finetune', from: pre.runDir, freeze: '0', sets: ['train.epochs=2', 'finetune.unfreeze={every: 2, unit: step, order: fisher}'], runDir: path.join(root, 'gradual') }));
    const saved = process.exitCode;
    await evalCommand().parseAsync([pre.runDir], { from: 'user' });
    evalCode = Number(process.exitCode ?? 0);
    process.exitCode = saved;
  });
  for (const r of runs) assert.equal(r.exitCode, 0, `${r.runDir}: ${String(r.summary.error)}`);
  assert.equal(runs.length, 3);
  assert.equal(evalCode, 0);
  // The runs did what they are here to cover.
  const rows = metricRows(runs[0].runDir);
  assert.ok(rows.some((r) => r.kind === 'dynamics' && Number(r.step) > 0), 'dynamics rows during training');
  assert.ok(metricRows(runs[2].runDir).some((r) => r.event === 'unfreeze' && String(r.order).startsWith('fisher')), 'a Fisher-ordered opening');
  assert.deepEqual(reads.slice(0, 5), [], `${reads.length} synchronous readback(s); the first from: ${reads.slice(0, 5).join('\n  ')}`);
});
