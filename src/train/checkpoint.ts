import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { packTensors, readTensors, TensorSpec } from '../runs/bundle';
import { FILES } from '../runs/rundir';
import { recoverDir, replaceDirAtomic } from '../util/fsx';
import { RngState } from '../util/rng';
import { NamedOptimizer } from './optimizer';
import { Network } from '../models/network';

/**
 * What --resume needs to continue a run exactly: every weight (batch-norm
 * statistics included), the optimizer's per-variable state, the step and epoch,
 * the shuffling RNG, and which blocks train.
 */
export interface CheckpointState {
  version: 1;
  epoch: number;
  step: number;
  rng: RngState;
  trainableBlocks: boolean[];
  optimizer: { kind: string; slots: Array<{ name: string; step: number; hasV: boolean }> };
  tensors: TensorSpec[];
  /** Gradual-unfreezing state: whether opening has stopped, and the stop metric's history. */
  schedule?: ScheduleState;
  /** Set for a mid-epoch checkpoint: where in the epoch (whose shuffle `rng` regenerates) to go on. */
  inEpoch?: InEpoch | null;
  /** Running values the loop carries across epochs (best val, image counts). */
  carry: Record<string, number>;
}

export interface InEpoch {
  /** Examples of the epoch's order already trained on. */
  pos: number;
  lossSum: number;
  hits: number;
  seen: number;
  stepSeconds: number;
}

export interface ScheduleState {
  stopped: boolean;
  history: number[];
}

export function checkpointDir(runDir: string): string {
  return path.join(runDir, FILES.checkpoint);
}

/** Written to a temp folder and swapped in: a checkpoint is complete or absent. The tensors are read back (awaited) before anything is written. */
export async function saveCheckpoint(
  runDir: string,
  net: Network,
  opt: NamedOptimizer,
  reference: ReadonlyMap<string, tf.Tensor> | null,
  st: Omit<CheckpointState, 'version' | 'tensors' | 'optimizer'>,
): Promise<void> {
  const tensors = net.variables().map((v) => ({ name: `w/${v.name}`, tensor: v.variable as tf.Tensor }));
  for (const [name, t] of reference ?? []) tensors.push({ name: `ref/${name}`, tensor: t });
  const slots = opt.save();
  for (const s of slots) {
    tensors.push({ name: `opt/${s.name}/m`, tensor: s.m });
    if (s.v) tensors.push({ name: `opt/${s.name}/v`, tensor: s.v });
  }
  try {
    const { specs, bytes } = await packTensors(tensors);
    replaceDirAtomic(checkpointDir(runDir), (tmp) => {
      fs.writeFileSync(path.join(tmp, 'tensors.bin'), bytes);
      const state: CheckpointState = {
        version: 1,
        ...st,
        optimizer: { kind: opt.settings.kind, slots: slots.map((s) => ({ name: s.name, step: s.step, hasV: !!s.v })) },
        tensors: specs,
      };
      fs.writeFileSync(path.join(tmp, 'state.json'), JSON.stringify(state));
    });
  } finally {
    for (const s of slots) tf.dispose(s.v ? [s.m, s.v] : [s.m]);
  }
}

export function hasCheckpoint(runDir: string): boolean {
  return fs.existsSync(path.join(checkpointDir(runDir), 'state.json'));
}

/** Put back a complete checkpoint that a crash left beside the checkpoint folder; returns its name. */
export function recoverCheckpoint(runDir: string): string | null {
  return recoverDir(checkpointDir(runDir), (d) => fs.existsSync(path.join(d, 'state.json')));
}

/** Restore weights and optimizer state into `net`/`opt`; returns the loop state and the reference weights. */
export function loadCheckpoint(runDir: string, net: Network, opt: NamedOptimizer): { state: CheckpointState; reference: Map<string, tf.Tensor> } {
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
  } catch (e) {
    for (const x of t.values()) x.dispose();
    throw e;
  }
  const reference = new Map<string, tf.Tensor>();
  for (const [name, x] of t) {
    if (name.startsWith('ref/')) reference.set(name.slice(4), x);
    else x.dispose();
  }
  return { state, reference };
}
