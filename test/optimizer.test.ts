import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { NamedOptimizer, OptimizerSettings } from '../src/train/optimizer';
import { learningRate } from '../src/train/schedule';

let tensorsAtStart = 0; // set in before()

before(async () => {
  tf.enableProdMode();
  assert.ok(await tf.setBackend('cpu'));
  tensorsAtStart = tf.memory().numTensors;
});

after(() => {
  assert.equal(tf.memory().numTensors, tensorsAtStart, 'tensors leaked across the optimizer tests');
});

const SGD = (momentum: number, weightDecay = 0): OptimizerSettings => ({ kind: 'sgd', momentum, weightDecay });
const ADAM = (weightDecay = 0): OptimizerSettings => ({ kind: 'adam', momentum: 0, weightDecay });

function close(actual: ArrayLike<number>, expected: number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length, what);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

/** Run `fn`, dispose what it leaves, and check that the tensor count is back where it was. */
function noLeak(fn: () => void): void {
  const n = tf.memory().numTensors;
  fn();
  assert.equal(tf.memory().numTensors, n, 'tensor count changed');
}

/** One optimizer step with constant gradients given as plain numbers. */
function step(opt: NamedOptimizer, vars: Map<string, tf.Variable>, grads: Record<string, number[]>, lr: number): void {
  const g = new Map(Object.entries(grads).map(([k, v]) => [k, tf.tensor1d(v)] as [string, tf.Tensor]));
  opt.apply(vars, g, lr);
  for (const t of g.values()) t.dispose();
}

const read = (v: tf.Tensor) => Array.from(v.dataSync());

/** save() returns copies the caller owns: read them as plain arrays and release them. */
function snapshot(opt: NamedOptimizer): Array<{ name: string; step: number; m: number[]; v?: number[] }> {
  const saved = opt.save();
  const out = saved.map((x) => ({ name: x.name, step: x.step, m: read(x.m), v: x.v ? read(x.v) : undefined }));
  for (const x of saved) tf.dispose(x.v ? [x.m, x.v] : [x.m]);
  return out;
}

/** A variable that owns its data (tf.variable(t) shares t's data and leaves t to the caller). */
function mkVar(values: number[] | tf.Tensor, name?: string): tf.Variable {
  const t = Array.isArray(values) ? tf.tensor1d(values) : values.clone();
  const v = tf.variable(t, true, name);
  t.dispose();
  return v;
}

test('SGD with momentum follows PyTorch: buf = g on the first step, then buf = mu buf + g', () => {
  noLeak(() => {
    const w = mkVar([1, -2], 'sgd/w');
    const vars = new Map([['w', w]]);
    const opt = new NamedOptimizer(SGD(0.9));
    // lr 0.1; g1 = [1, 2], g2 = [0.5, -1], g3 = [-1, 0]:
    // buf1 = [1, 2]                              w1 = [1, -2] - 0.1 [1, 2]       = [0.9, -2.2]
    // buf2 = 0.9 [1, 2] + [0.5, -1] = [1.4, 0.8]  w2 = w1 - 0.1 [1.4, 0.8]        = [0.76, -2.28]
    // buf3 = 0.9 [1.4, 0.8] + [-1, 0] = [0.26, 0.72]  w3 = w2 - 0.1 [0.26, 0.72] = [0.734, -2.352]
    step(opt, vars, { w: [1, 2] }, 0.1);
    close(read(w), [0.9, -2.2], 1e-6, 'w1');
    step(opt, vars, { w: [0.5, -1] }, 0.1);
    close(read(w), [0.76, -2.28], 1e-6, 'w2');
    step(opt, vars, { w: [-1, 0] }, 0.1);
    close(read(w), [0.734, -2.352], 1e-6, 'w3');
    close(snapshot(opt)[0].m, [0.26, 0.72], 1e-6, 'buf3');
    assert.equal(opt.stepOf('w'), 3);
    assert.equal(opt.stepOf('other'), 0);
    opt.dispose();
    w.dispose();
  });
});

test('SGD weight decay is L2 added to the gradient', () => {
  noLeak(() => {
    const w = mkVar([1, -2], 'sgdwd/w');
    const vars = new Map([['w', w]]);
    const opt = new NamedOptimizer(SGD(0.9, 0.01));
    // g1' = [1, 2] + 0.01 [1, -2] = [1.01, 1.98]; buf1 = g1'; w1 = [1 - 0.101, -2 - 0.198] = [0.899, -2.198]
    // g2' = [0.5, -1] + 0.01 w1 = [0.50899, -1.02198]; buf2 = 0.9 buf1 + g2' = [1.41799, 0.76002]
    // w2 = w1 - 0.1 buf2 = [0.7572010, -2.2740020]
    step(opt, vars, { w: [1, 2] }, 0.1);
    close(read(w), [0.899, -2.198], 1e-6, 'w1');
    step(opt, vars, { w: [0.5, -1] }, 0.1);
    close(read(w), [0.757201, -2.274002], 1e-6, 'w2');
    opt.dispose();
    w.dispose();
  });
});

test("Adam's first step is about lr per coordinate, whatever the gradient's scale (bias correction)", () => {
  noLeak(() => {
    const w = mkVar([0, 0, 0, 0], 'adam1/w');
    const opt = new NamedOptimizer(ADAM());
    // m1 = 0.1 g, v1 = 0.001 g^2; corrected: m = g, v = g^2, so the step is lr g / |g| = lr sign(g).
    // Without the correction it would be lr 0.1 / sqrt(0.001) = 3.16 lr.
    step(opt, new Map([['w', w]]), { w: [1e-3, -5, 100, -0.2] }, 0.01);
    // (1e-3 / (1e-3 + eps) = 1 - 1e-5: hence the tolerance.)
    close(read(w), [-0.01, 0.01, -0.01, 0.01], 1e-6, 'w1');
    const [slot] = snapshot(opt);
    close(slot.m, [1e-4, -0.5, 10, -0.02], 1e-6, 'm1');
    close(slot.v!, [1e-9, 0.025, 10, 4e-5], 1e-6, 'v1');
    // Second step with the same gradient: m and v corrected are still g and g^2, so another lr sign(g).
    step(opt, new Map([['w', w]]), { w: [1e-3, -5, 100, -0.2] }, 0.01);
    close(read(w), [-0.02, 0.02, -0.02, 0.02], 1e-6, 'w2');
    opt.dispose();
    w.dispose();
  });
});

test('Adam weight decay is decoupled (AdamW): w -= lr (update + wd w)', () => {
  noLeak(() => {
    const w = mkVar([2, -4], 'adamw/w');
    const opt = new NamedOptimizer(ADAM(0.1));
    // update = sign(g) = [1, 1]; w1 = [2 - 0.1 (1 + 0.2), -4 - 0.1 (1 - 0.4)] = [1.88, -4.06].
    // (L2 in the gradient would give sign(g + wd w) = [1, 1] and w1 = [1.9, -4.1] instead.)
    step(opt, new Map([['w', w]]), { w: [0.5, 0.5] }, 0.1);
    close(read(w), [1.88, -4.06], 1e-6, 'w1');
    opt.dispose();
    w.dispose();
  });
});

test('a variable that joins later gets its own step 1 and leaves the others untouched (Adam)', () => {
  noLeak(() => {
    const mk = (name: string, v: number[]) => mkVar(v, name);
    const a1 = mk('late/a1', [1, 1]);
    const a2 = mk('late/a2', [1, 1]);
    const b = mk('late/b', [0, 0, 0]);
    const solo = new NamedOptimizer(ADAM());
    const both = new NamedOptimizer(ADAM());
    const gA = (t: number) => [Math.sin(t) + 0.1, Math.cos(3 * t)];
    for (let t = 0; t < 10; t++) {
      step(solo, new Map([['a', a1]]), { a: gA(t) }, 0.01);
      step(both, new Map([['a', a2]]), { a: gA(t) }, 0.01);
    }
    // b arrives at step 11, listed first so a position-keyed state would mix the two.
    step(solo, new Map([['a', a1]]), { a: gA(10) }, 0.01);
    step(both, new Map<string, tf.Variable>([['b', b], ['a', a2]]), { b: [0.3, -7, 1e-3], a: gA(10) }, 0.01);
    assert.equal(both.stepOf('b'), 1);
    assert.equal(both.stepOf('a'), 11);
    // b's first update is lr sign(g). With a shared step counter (t = 11) it would be
    // lr (0.1 / (1 - 0.9^11)) / sqrt(0.001 / (1 - 0.999^11)) = 0.43 lr.
    close(read(b), [-0.01, 0.01, -0.01], 1e-6, 'b after its first step');
    // a's weights and moments are exactly those of the optimizer that never saw b.
    assert.deepEqual(read(a2), read(a1));
    const sa = snapshot(solo).find((s) => s.name === 'a')!;
    const ba = snapshot(both).find((s) => s.name === 'a')!;
    assert.deepEqual(ba.m, sa.m);
    assert.deepEqual(ba.v, sa.v);
    assert.equal(ba.step, sa.step);
    // A step that leaves `a` out (frozen) does not advance its counter.
    step(both, new Map([['b', b]]), { b: [1, 1, 1] }, 0.01);
    assert.equal(both.stepOf('a'), 11);
    assert.equal(both.stepOf('b'), 2);
    solo.dispose();
    both.dispose();
    for (const v of [a1, a2, b]) v.dispose();
  });
});

test('SGD: a variable that joins later starts its momentum buffer at its own first gradient', () => {
  noLeak(() => {
    const a = mkVar([0], 'sgdlate/a');
    const b = mkVar([0], 'sgdlate/b');
    const opt = new NamedOptimizer(SGD(0.9));
    for (let t = 0; t < 5; t++) step(opt, new Map([['a', a]]), { a: [1] }, 1);
    step(opt, new Map([['a', a], ['b', b]]), { a: [1], b: [2] }, 1);
    // lr 1. b: buf = g = 2, so w = -2 (a shared "first step" would have used 0.9 * 0 + 2 too, but a
    // position-keyed buffer would have started from a's). a: buf = 0.9 buf + 1 -> 1, 1.9, 2.71,
    // 3.439, 4.0951, 4.68559; w = -(their sum) = -17.82969.
    close(read(b), [-2], 1e-6, 'b');
    close(read(a), [-(1 + 1.9 + 2.71 + 3.439 + 4.0951 + 4.68559)], 1e-5, 'a');
    assert.equal(opt.stepOf('b'), 1);
    assert.equal(opt.stepOf('a'), 6);
    opt.dispose();
    a.dispose();
    b.dispose();
  });
});

test('a learning rate per variable (discriminative rates)', () => {
  noLeak(() => {
    const a = mkVar([1], 'perlr/a');
    const b = mkVar([1], 'perlr/b');
    const opt = new NamedOptimizer(SGD(0));
    const rates: Record<string, number> = { a: 0.5, b: 0.05 };
    const g = new Map([['a', tf.tensor1d([2])], ['b', tf.tensor1d([2])]] as Array<[string, tf.Tensor]>);
    opt.apply(new Map([['a', a], ['b', b]]), g, (name) => rates[name]);
    for (const t of g.values()) t.dispose();
    // w = 1 - lr * 2.
    close(read(a), [0], 1e-7, 'a');
    close(read(b), [0.9], 1e-7, 'b');
    opt.dispose();
    a.dispose();
    b.dispose();
  });
});

test('save()/load() round trip: a restored optimizer continues exactly like the original', () => {
  noLeak(() => {
    for (const settings of [ADAM(0.01), SGD(0.9, 0.001)]) {
      const init = { p: [0.5, -1.5, 2], q: [3, 0.25] };
      const w1 = { p: mkVar(init.p), q: mkVar(init.q) };
      const vars1 = new Map(Object.entries(w1));
      const orig = new NamedOptimizer(settings);
      const grad = (t: number) => ({ p: [Math.sin(t), t * 0.1 - 0.3, 1], q: [Math.cos(t), -0.5] });
      for (let t = 0; t < 4; t++) step(orig, vars1, grad(t), 0.05);
      step(orig, new Map([['p', w1.p]]), { p: grad(4).p }, 0.05); // p one step ahead of q
      // Snapshot what a checkpoint would store: plain copies of the state.
      const saved = orig.save();
      assert.deepEqual(saved.map((s) => [s.name, s.step]).sort(), [['p', 5], ['q', 4]]);
      const w2 = { p: mkVar(w1.p), q: mkVar(w1.q) };
      const vars2 = new Map(Object.entries(w2));
      const restored = new NamedOptimizer(settings);
      restored.load(saved);
      for (const s of saved) {
        s.m.dispose();
        s.v?.dispose();
      }
      assert.equal(restored.stepOf('p'), 5);
      assert.equal(restored.stepOf('q'), 4);
      for (let t = 5; t < 8; t++) {
        step(orig, vars1, grad(t), 0.05);
        step(restored, vars2, grad(t), 0.05);
      }
      assert.deepEqual(read(w2.p), read(w1.p), `${settings.kind}: p bit-identical`);
      assert.deepEqual(read(w2.q), read(w1.q), `${settings.kind}: q bit-identical`);
      const a = snapshot(orig);
      const b = snapshot(restored);
      for (const s of a) {
        const r = b.find((x) => x.name === s.name)!;
        assert.equal(r.step, s.step);
        assert.deepEqual(r.m, s.m);
        if (s.v) assert.deepEqual(r.v, s.v);
        else assert.equal(r.v, undefined);
      }
      orig.dispose();
      restored.dispose();
      for (const v of [...vars1.values(), ...vars2.values()]) v.dispose();
    }
  });
});

test(
  'save() is a snapshot: later steps do not change what it returned',
  () => {
    const w = mkVar([1, 2], 'snap/w');
    const opt = new NamedOptimizer(ADAM());
    try {
      step(opt, new Map([['w', w]]), { w: [1, 1] }, 0.1);
      const saved = opt.save();
      const m = read(saved[0].m);
      step(opt, new Map([['w', w]]), { w: [1, 1] }, 0.1);
      // m after one step is 0.1 g = 0.1; after two it would be 0.19.
      assert.deepEqual(read(saved[0].m), m);
      tf.dispose(saved.flatMap((x) => (x.v ? [x.m, x.v] : [x.m])));
    } finally {
      opt.dispose();
      w.dispose();
    }
  },
);

test(
  'load(save()) on the same optimizer keeps its state',
  () => {
    const before = tf.memory().numTensors;
    const w = mkVar([1, 2], 'self/w');
    const opt = new NamedOptimizer(ADAM());
    try {
      step(opt, new Map([['w', w]]), { w: [1, 1] }, 0.1);
      const m = snapshot(opt)[0].m;
      const saved = opt.save();
      opt.load(saved);
      tf.dispose(saved.flatMap((x) => (x.v ? [x.m, x.v] : [x.m])));
      assert.equal(opt.stepOf('w'), 1);
      assert.deepEqual(snapshot(opt)[0].m, m);
    } finally {
      opt.dispose();
      w.dispose();
      assert.equal(tf.memory().numTensors, before);
    }
  },
);

test('learning-rate schedules', () => {
  const base = 0.1;
  const total = 100;
  // Constant.
  for (const s of [0, 50, 99]) assert.equal(learningRate('constant', base, s, total), base);
  // Cosine: base at step 0, base/2 halfway, non-increasing, about 0 at the end.
  assert.equal(learningRate('cosine', base, 0, total), base);
  assert.ok(Math.abs(learningRate('cosine', base, 50, total) - base / 2) < 1e-12);
  assert.ok(learningRate('cosine', base, 99, total) < base * 1e-3);
  assert.ok(learningRate('cosine', base, total, total) < 1e-12);
  for (let s = 1; s < total; s++) assert.ok(learningRate('cosine', base, s, total) <= learningRate('cosine', base, s - 1, total));
  // Step: x0.1 at 50 %, x0.01 from 75 %.
  assert.equal(learningRate('step', base, 49, total), base);
  assert.ok(Math.abs(learningRate('step', base, 50, total) - base * 0.1) < 1e-12);
  assert.ok(Math.abs(learningRate('step', base, 74, total) - base * 0.1) < 1e-12);
  assert.ok(Math.abs(learningRate('step', base, 75, total) - base * 0.01) < 1e-12);
  // Warmup: linear from base/W at step 0 to base at step W-1, then the schedule over the rest.
  const W = 10;
  for (let s = 0; s < W; s++) assert.ok(Math.abs(learningRate('cosine', base, s, total, W) - (base * (s + 1)) / W) < 1e-12, `warmup step ${s}`);
  assert.equal(learningRate('cosine', base, W, total, W), base);
  // Halfway through the 90 post-warmup steps: step 10 + 45.
  assert.ok(Math.abs(learningRate('cosine', base, W + 45, total, W) - base / 2) < 1e-12);
  assert.ok(Math.abs(learningRate('step', base, W + 45, total, W) - base * 0.1) < 1e-12);
  assert.equal(learningRate('constant', base, 3, total, W), (base * 4) / W);
});
