import * as tf from '@tensorflow/tfjs';

/**
 * SGD (momentum) and Adam(W) with state keyed by variable name and a step
 * count per variable. Stock tfjs optimizers key state by position and share
 * one Adam step: unfreezing a block would shift every other variable's moments
 * and give the newly trained block an uncorrected, oversized first step.
 */
export interface OptimizerSettings {
  kind: 'sgd' | 'adam';
  momentum: number;
  weightDecay: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
}

interface Slot {
  step: number;
  m: tf.Variable;
  v?: tf.Variable;
}

export interface SavedSlot {
  name: string;
  step: number;
  m: tf.Tensor;
  v?: tf.Tensor;
}

export class NamedOptimizer {
  private readonly slots = new Map<string, Slot>();
  private readonly b1: number;
  private readonly b2: number;
  private readonly eps: number;

  constructor(readonly settings: OptimizerSettings) {
    this.b1 = settings.beta1 ?? 0.9;
    this.b2 = settings.beta2 ?? 0.999;
    this.eps = settings.epsilon ?? 1e-8;
  }

  /** One update of each named variable from its gradient, at learning rate `lr` (or a rate per variable). */
  apply(vars: ReadonlyMap<string, tf.Variable>, grads: ReadonlyMap<string, tf.Tensor>, lrAll: number | ((name: string) => number)): void {
    const { kind, momentum, weightDecay } = this.settings;
    for (const [name, g0] of grads) {
      const lr = typeof lrAll === 'number' ? lrAll : lrAll(name);
      const w = vars.get(name)!;
      let slot = this.slots.get(name);
      if (!slot) {
        // Inside tidy the zero tensors are released; the variables keep their data.
        slot = tf.tidy(() => ({ step: 0, m: tf.variable(tf.zerosLike(w), false), v: kind === 'adam' ? tf.variable(tf.zerosLike(w), false) : undefined }));
        this.slots.set(name, slot);
      }
      slot.step += 1;
      const t = slot.step;
      const s = slot;
      tf.tidy(() => {
        if (kind === 'sgd') {
          const g = weightDecay ? g0.add(w.mul(weightDecay)) : g0;
          // PyTorch's convention: the first step's buffer is the gradient itself.
          const buf = t === 1 ? g : s.m.mul(momentum).add(g);
          s.m.assign(buf);
          w.assign(w.sub(buf.mul(lr)));
        } else {
          const m = s.m.mul(this.b1).add(g0.mul(1 - this.b1));
          const v = s.v!.mul(this.b2).add(g0.square().mul(1 - this.b2));
          s.m.assign(m);
          s.v!.assign(v);
          const mhat = m.div(1 - Math.pow(this.b1, t));
          const vhat = v.div(1 - Math.pow(this.b2, t));
          let upd = mhat.div(vhat.sqrt().add(this.eps));
          if (weightDecay) upd = upd.add(w.mul(weightDecay));
          w.assign(w.sub(upd.mul(lr)));
        }
      });
    }
  }

  stepOf(name: string): number {
    return this.slots.get(name)?.step ?? 0;
  }

  /** A snapshot of the state (copies: later updates do not change it); the caller disposes it. */
  save(): SavedSlot[] {
    return [...this.slots.entries()].map(([name, s]) => ({ name, step: s.step, m: tf.clone(s.m), v: s.v ? tf.clone(s.v) : undefined }));
  }

  load(saved: ReadonlyArray<{ name: string; step: number; m: tf.Tensor; v?: tf.Tensor }>): void {
    // Build the new slots before releasing the old ones: `saved` may share their data.
    const next = saved.map((s) => [s.name, { step: s.step, m: tf.variable(s.m, false), v: s.v ? tf.variable(s.v, false) : undefined }] as const);
    this.dispose();
    for (const [name, slot] of next) this.slots.set(name, slot);
  }

  dispose(): void {
    for (const s of this.slots.values()) {
      s.m.dispose();
      s.v?.dispose();
    }
    this.slots.clear();
  }
}
