import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { readTensors, TensorSpec, writeTensors } from '../runs/bundle';
import { FILES } from '../runs/rundir';
import { replaceDirAtomic } from '../util/fsx';
import { RngState } from '../util/rng';
import { NamedOptimizer } from './optimizer';
import { Network } from '../models/network';

/**
 * What --resume needs to continue a run exactly: every weight (batch-norm
 * statistics included), the optimizer's per-variable state, the step and epoch,
 * the shuffling RNG, and which blocks are frozen.
 */
export interface CheckpointState {
  version: 1;
  epoch: number;
  step: number;
  rng: RngState;
  frozenBlocks: number;
  trainableBlocks: boolean[];
  optimizer: { kind: string; slots: Array<{ name: string; step: number; hasV: boolean }> };
  tensors: TensorSpec[];
  /** Running values the loop carries across epochs (best val, image counts). */
  carry: Record<string, number>;
}

export function checkpointDir(runDir: string): string {
  return path.join(runDir, FILES.checkpoint);
}

/** Written to a temp folder and swapped in: a checkpoint is complete or absent. */
export function saveCheckpoint(runDir: string, net: Network, opt: NamedOptimizer, st: Omit<CheckpointState, 'version' | 'tensors' | 'optimizer'>): void {
  const tensors = net.variables().map((v) => ({ name: `w/${v.name}`, tensor: v.variable as tf.Tensor }));
  const slots = opt.save();
  for (const s of slots) {
    tensors.push({ name: `opt/${s.name}/m`, tensor: s.m });
    if (s.v) tensors.push({ name: `opt/${s.name}/v`, tensor: s.v });
  }
  replaceDirAtomic(checkpointDir(runDir), (tmp) => {
    const specs = writeTensors(tmp, 'tensors.bin', tensors);
    const state: CheckpointState = {
      version: 1,
      ...st,
      optimizer: { kind: opt.settings.kind, slots: slots.map((s) => ({ name: s.name, step: s.step, hasV: !!s.v })) },
      tensors: specs,
    };
    fs.writeFileSync(path.join(tmp, 'state.json'), JSON.stringify(state));
  });
}

export function hasCheckpoint(runDir: string): boolean {
  return fs.existsSync(path.join(checkpointDir(runDir), 'state.json'));
}

/** Restore weights and optimizer state into `net`/`opt`; returns the loop state. */
export function loadCheckpoint(runDir: string, net: Network, opt: NamedOptimizer): CheckpointState {
  const dir = checkpointDir(runDir);
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as CheckpointState;
  const t = readTensors(path.join(dir, 'tensors.bin'), state.tensors);
  try {
    for (const v of net.variables()) {
      const saved = t.get(`w/${v.name}`);
      if (!saved) throw new Error(`checkpoint in ${dir} lacks weight '${v.name}'`);
      v.variable.assign(saved);
    }
    opt.load(state.optimizer.slots.map((s) => ({ name: s.name, step: s.step, m: t.get(`opt/${s.name}/m`)!, v: s.hasV ? t.get(`opt/${s.name}/v`) : undefined })));
  } finally {
    for (const x of t.values()) x.dispose();
  }
  return state;
}
