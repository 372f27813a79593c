/**
 * Backpropagation that frees as it goes.
 *
 * tfjs's engine.gradients (tfjs-core 4.22, engine.ts and tape.ts) keeps every
 * tensor a gradient function saved, and the gradient of every intermediate
 * tensor, until the whole backward pass ends. At the peak, a training step
 * holds all saved activations plus all their gradients: about twice what
 * PyTorch's autograd holds, which frees each node's saved tensors and its
 * output gradients once the node's backward has run.
 *
 * installLowMemoryGradients() replaces engine.gradients (used by tf.grad,
 * tf.grads, tf.variableGrads, tf.valueAndGrads, optimizers) with the same
 * algorithm, the same operations in the same order (so the same numbers),
 * that disposes, right after each node of the tape has been differentiated:
 * the tensors that node saved, and the gradients of its outputs (every
 * consumer of an output comes later on the tape, so its gradient is complete
 * and used only here). Each node's gradient function runs in one tidy, so
 * tensors it makes outside its per-input closures are freed with it too.
 * Higher-order gradients (a gradient taken inside a gradient) keep tfjs's
 * own code, which must keep the saved tensors.
 *
 * getFilteredNodesXToY below is tfjs-core's (Apache-2.0, tape.ts), which the
 * package does not export.
 */
import * as tf from '@tensorflow/tfjs';

interface TapeNode {
  id: number;
  kernelName: string;
  outputs: tf.Tensor[];
  inputs: Record<string, tf.Tensor>;
  gradient?: (dys: Array<tf.Tensor | null>) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

interface EngineInternals {
  state: { gradientDepth: number; activeTape: TapeNode[] | null };
  startTape(): void;
  endTape(): void;
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  tidy<T extends tf.TensorContainer>(name: string | (() => T), f?: () => T): T;
  gradients<T extends tf.Tensor>(f: () => T, xs: tf.Tensor[], dy?: T, allowNoGradients?: boolean): { value: T; grads: tf.Tensor[] };
  granularLowMemoryGradients?: boolean;
}

/** The nodes of `tape` on a path from one of `xs` to `y`, with inputs not from `xs` pruned (tfjs-core's tape.ts). */
function getFilteredNodesXToY(tape: TapeNode[], xs: tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const tensorsFromX: Record<number, boolean> = {};
  const nodesFromX: Record<number, boolean> = {};
  for (const x of xs) tensorsFromX[x.id] = true;
  for (const node of tape) {
    for (const inputName in node.inputs) {
      if (tensorsFromX[node.inputs[inputName].id]) {
        node.outputs.forEach((output) => (tensorsFromX[output.id] = true));
        nodesFromX[node.id] = true;
        break;
      }
    }
  }
  const tensorsLeadToY: Record<number, boolean> = { [y.id]: true };
  const nodesToY: Record<number, boolean> = {};
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    if (node.outputs.some((o) => tensorsLeadToY[o.id])) {
      for (const inputName in node.inputs) {
        tensorsLeadToY[node.inputs[inputName].id] = true;
        nodesToY[node.id] = true;
      }
    }
  }
  const filtered: TapeNode[] = [];
  for (const node of tape) {
    if (!nodesFromX[node.id] || !nodesToY[node.id]) continue;
    const inputs: Record<string, tf.Tensor> = {};
    for (const inputName in node.inputs) if (tensorsFromX[node.inputs[inputName].id]) inputs[inputName] = node.inputs[inputName];
    filtered.push({ ...node, inputs, outputs: node.outputs });
  }
  return filtered;
}

/**
 * Gradients keyed by tensor id, counting how many keys hold each gradient
 * tensor, so one is disposed only when no key holds it any more.
 */
class GradientMap {
  private readonly byId = new Map<number, tf.Tensor>();
  private readonly holders = new Map<tf.Tensor, number>();

  constructor(private readonly keep: Set<tf.Tensor>) {}

  holds(t: tf.Tensor): boolean {
    return this.holders.has(t);
  }

  get(id: number): tf.Tensor | undefined {
    return this.byId.get(id);
  }

  set(id: number, t: tf.Tensor): void {
    const old = this.byId.get(id);
    this.byId.set(id, t);
    this.holders.set(t, (this.holders.get(t) ?? 0) + 1);
    if (old) this.drop(old);
  }

  /** Forgets the gradient of `id`, disposing it unless another key holds it or it is the caller's. */
  delete(id: number): void {
    const t = this.byId.get(id);
    if (!t) return;
    this.byId.delete(id);
    this.drop(t);
  }

  private drop(t: tf.Tensor): void {
    const n = (this.holders.get(t) ?? 1) - 1;
    if (n > 0) {
      this.holders.set(t, n);
      return;
    }
    this.holders.delete(t);
    if (!this.keep.has(t)) t.dispose();
  }
}

function lowMemoryGradients(this: EngineInternals, original: EngineInternals['gradients'], f: () => tf.Tensor, xs: tf.Tensor[], dy?: tf.Tensor, allowNoGradients = false) {
  if (this.state.gradientDepth > 0) return original.call(this, f, xs, dy, allowNoGradients);
  if (xs.length === 0) throw new Error('gradients() received an empty list of xs.');
  if (dy != null && dy.dtype !== 'float32') throw new Error(`dy must have 'float32' dtype, but has '${dy.dtype}'`);
  const y = this.scopedRun(
    () => this.startTape(),
    () => this.endTape(),
    () => this.tidy('forward', f),
  );
  if (!(y instanceof tf.Tensor)) throw new Error('The result y returned by f() must be a tensor.');
  const tape = this.state.activeTape!;
  const filtered = getFilteredNodesXToY(tape, xs, y);
  if (!allowNoGradients && filtered.length === 0 && xs.length > 0) {
    throw new Error('Cannot compute gradient of y=f(x) with respect to x. Make sure that the f you passed encloses all operations that lead from x to y.');
  }
  return this.tidy('backward', () => {
    const keep = new Set<tf.Tensor>(dy ? [dy] : []);
    const grads = new GradientMap(keep);
    grads.set(y.id, dy ?? tf.ones(y.shape));
    for (let i = filtered.length - 1; i >= 0; i--) {
      const node = filtered[i];
      if (!node.gradient) throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
      const dys = node.outputs.map((o) => grads.get(o.id) ?? null);
      const dxs = this.tidy(() => {
        const inputGradients = node.gradient!(dys);
        const out: Record<string, tf.Tensor> = {};
        for (const inputName in node.inputs) {
          if (!(inputName in inputGradients)) {
            throw new Error(`Cannot backprop through input ${inputName}. Available gradients found: ${Object.keys(inputGradients)}.`);
          }
          out[inputName] = inputGradients[inputName]();
        }
        return out;
      });
      for (const inputName in node.inputs) {
        const dx = dxs[inputName];
        const x = node.inputs[inputName];
        if (dx.dtype !== 'float32') {
          throw new Error(`Error in gradient for op ${node.kernelName}. The gradient of input ${inputName} must have 'float32' dtype, but has '${dx.dtype}'`);
        }
        if (!tf.util.arraysEqual(dx.shape, x.shape)) {
          throw new Error(`Error in gradient for op ${node.kernelName}. The gradient of input '${inputName}' has shape '${dx.shape}', which does not match the shape of the input '${x.shape}'`);
        }
        const current = grads.get(x.id);
        grads.set(x.id, current ? tf.add(current, dx) : dx);
      }
      // Gradients that were summed into an accumulated one (a gradient
      // function may return one tensor for two inputs: checked after all).
      for (const dx of new Set(Object.values(dxs))) if (!grads.holds(dx) && !keep.has(dx)) dx.dispose();
      // Every consumer of this node's outputs came later on the tape: their
      // gradients are complete and needed by nothing else, nor are its saved tensors.
      for (const o of node.outputs) grads.delete(o.id);
      for (const t of node.saved ?? []) t.dispose();
    }
    const result = xs.map((x) => grads.get(x.id)!);
    for (const node of tape) for (const t of node.saved ?? []) t.dispose();
    this.state.activeTape = null;
    return { value: y, grads: result };
  });
}

/** Replaces the tfjs engine's gradients() with the freeing version above. Idempotent. */
export function installLowMemoryGradients(): void {
  const engine = tf.engine() as unknown as EngineInternals;
  if (engine.granularLowMemoryGradients) return;
  const original = engine.gradients;
  engine.gradients = function (this: EngineInternals, f, xs, dy, allowNoGradients) {
    return lowMemoryGradients.call(this, original, f, xs, dy, allowNoGradients) as ReturnType<EngineInternals['gradients']>;
  } as EngineInternals['gradients'];
  engine.granularLowMemoryGradients = true;
}
