import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSets, resolveConfig } from '../src/config/load';
import { Config } from '../src/config/schema';
import { SyntheticPlan, loadSynthetic, orthonormalPatterns, planSynthetic, renderSamples } from '../src/data/formats/synthetic';
import { Examples } from '../src/data/types';
import { UsageError } from '../src/util/errors';
import { Rng } from '../src/util/rng';
import { FloatStore, readAll } from '../src/data/cache/store';

function cfgOf(...sets: string[]): Config {
  return resolveConfig([parseSets(sets)]);
}

/** Small and fast: 4x4 grid of 8x8 patches, few samples. */
const SMALL = ['data.synthetic.train_samples=96', 'data.synthetic.test_samples=48'];

/** Patch g of sample i as a vector in the (py, px, c) layout the features use. */
function patchVec(e: Examples, i: number, g: number, plan: SyntheticPlan, C: number): Float64Array {
  const side = plan.grid * plan.patch;
  const gy = Math.floor(g / plan.grid);
  const gx = g % plan.grid;
  const out = new Float64Array(plan.dim);
  for (let py = 0; py < plan.patch; py++) {
    for (let px = 0; px < plan.patch; px++) {
      for (let c = 0; c < C; c++) {
        out[(py * plan.patch + px) * C + c] = (e.x as FloatStore).data[i * side * side * C + ((gy * plan.patch + py) * side + gx * plan.patch + px) * C + c];
      }
    }
  }
  return out;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>, bOffset = 0): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[bOffset + i];
  return s;
}

test('features are orthonormal across every level (Gram matrix = identity)', () => {
  const cfg = cfgOf(...SMALL, 'data.synthetic.features_per_class=2');
  const plan = planSynthetic(cfg);
  const rows: Float32Array[] = [];
  for (const f of plan.byDepth) for (let r = 0; r < f.length / plan.dim; r++) rows.push(f.subarray(r * plan.dim, (r + 1) * plan.dim));
  // (2 + 6 + 24) nodes x 2 features each.
  assert.equal(rows.length, 64);
  assert.equal(plan.dim, 64);
  let worst = 0;
  for (let a = 0; a < rows.length; a++) {
    for (let b = a; b < rows.length; b++) worst = Math.max(worst, Math.abs(dot(rows[a], rows[b]) - (a === b ? 1 : 0)));
  }
  assert.ok(worst < 1e-5, `max |G - I| = ${worst}`);
  // The helper on its own, for a full basis.
  const basis = orthonormalPatterns(16, 16, new Rng(3));
  for (let a = 0; a < 16; a++) for (let b = 0; b < 16; b++) {
    assert.ok(Math.abs(dot(basis.subarray(a * 16, a * 16 + 16), basis.subarray(b * 16, b * 16 + 16)) - (a === b ? 1 : 0)) < 1e-5);
  }
  // Every node owns distinct rows in its depth's block.
  for (let d = 0; d < plan.byDepth.length; d++) {
    const nodes = [...plan.hierarchy.nodes.values()].filter((n) => n.depth === d + 1);
    const starts = nodes.map((n) => plan.featureRow.get(n.id)!);
    assert.equal(new Set(starts).size, nodes.length);
    for (const s of starts) assert.ok(s >= 0 && s + 2 <= plan.byDepth[d].length / plan.dim);
  }
});

test('same data.seed gives identical data; a different seed gives different data', () => {
  const a = loadSynthetic(cfgOf(...SMALL, 'seed=5'));
  const b = loadSynthetic(cfgOf(...SMALL, 'seed=5'));
  const c = loadSynthetic(cfgOf(...SMALL, 'seed=6'));
  const d = loadSynthetic(cfgOf(...SMALL, 'seed=6', 'data.seed=5'));
  for (const part of ['train', 'test'] as const) {
    assert.deepEqual(a[part].x, b[part].x);
    assert.deepEqual(a[part].y, b[part].y);
    assert.deepEqual(a[part].hard, b[part].hard);
    assert.deepEqual(a[part].ids, b[part].ids);
    assert.deepEqual(a[part].x, d[part].x, 'data depends on data.seed, not on seed or train.seed');
    assert.notDeepEqual(a[part].x, c[part].x);
  }
  assert.notDeepEqual(a.train.y, c.train.y);
  assert.notDeepEqual(a.features!.byDepth[0], c.features!.byDepth[0]);
  // Train and test are different draws.
  assert.notDeepEqual(readAll(a.train.x).subarray(0, 1024), readAll(a.test.x).subarray(0, 1024));
  assert.deepEqual(a.shape, [32, 32, 1]);
  assert.equal(readAll(a.train.x).length, 96 * 32 * 32);
  assert.equal(a.train.ids[0], 'train-0');
  assert.equal(a.test.ids[47], 'test-47');
  assert.equal(a.skipped, 0);
});

test('exact hard counts: round(fraction * n)', () => {
  // round(0.1 * 203) = round(20.3) = 20; round(0.5 * 105) = round(52.5) = 53; round(0.013 * 203) = round(2.639) = 3.
  const ds = loadSynthetic(cfgOf('data.synthetic.train_samples=203', 'data.synthetic.test_samples=105', 'data.synthetic.hard_fraction_train=0.1', 'data.synthetic.hard_fraction_test=0.5'));
  const count = (h: Uint8Array) => h.reduce((s, v) => s + v, 0);
  assert.equal(count(ds.train.hard!), 20);
  assert.equal(count(ds.test.hard!), 53);
  const ds2 = loadSynthetic(cfgOf('data.synthetic.train_samples=203', 'data.synthetic.test_samples=10', 'data.synthetic.hard_fraction_train=0.013', 'data.synthetic.hard_fraction_test=0'));
  assert.equal(count(ds2.train.hard!), 3);
  assert.equal(count(ds2.test.hard!), 0);
});

test('balanced classes', () => {
  // 24 classes; 96 = 4 x 24 exactly; 100 = 4 x 24 + 4, so counts are 4 or 5.
  const ds = loadSynthetic(cfgOf('data.synthetic.train_samples=96', 'data.synthetic.test_samples=100'));
  const hist = (y: Int32Array) => {
    const h = new Array(24).fill(0);
    for (const v of y) h[v]++;
    return h;
  };
  assert.deepEqual(hist(ds.train.y), new Array(24).fill(4));
  const t = hist(ds.test.y);
  assert.ok(t.every((v) => v === 4 || v === 5));
  assert.equal(t.filter((v) => v === 5).length, 4);
  // Labels are shuffled, not in class order.
  assert.notDeepEqual([...ds.train.y.subarray(0, 24)], Array.from({ length: 24 }, (_, i) => i));
});

/**
 * With noise 0 every patch is either zero or exactly strength x one feature, so the
 * projections on the feature directions tell which feature (if any) each patch shows.
 */
function checkPatches(cfg: Config, expectHardDrop: number): void {
  const plan = planSynthetic(cfg);
  const C = cfg.data.channels === "auto" ? 1 : cfg.data.channels;
  const fpc = cfg.data.synthetic.features_per_class;
  const ds = loadSynthetic(cfg);
  const h = plan.hierarchy;
  const levels = plan.byDepth.length;
  let sawHard = 0;
  let sawEasy = 0;
  for (const e of [ds.train, ds.test]) {
    for (let i = 0; i < e.y.length; i++) {
      const line = h.lineage(h.classes[e.y[i]]);
      const shown = new Array(levels).fill(0);
      for (let g = 0; g < plan.grid * plan.grid; g++) {
        const v = patchVec(e, i, g, plan, C);
        const norm = Math.sqrt(dot(v, v));
        if (norm < 1e-6) continue; // a blank patch
        // Which feature row, at which depth, does it show?
        let hits = 0;
        for (let d = 0; d < levels; d++) {
          const f = plan.byDepth[d];
          for (let r = 0; r < f.length / plan.dim; r++) {
            const p = dot(v, f, r * plan.dim);
            if (Math.abs(p) < 1e-4) continue;
            hits++;
            assert.ok(Math.abs(p - plan.strength[d]) < 1e-4, `projection ${p} should be the strength ${plan.strength[d]}`);
            assert.ok(Math.abs(norm - plan.strength[d]) < 1e-4, 'nothing but the feature in the patch');
            const own = plan.featureRow.get(line[d])!;
            assert.ok(r >= own && r < own + fpc, `sample ${i} shows a depth-${d + 1} feature of another class`);
            shown[d]++;
          }
        }
        assert.equal(hits, 1, 'a non-blank patch shows exactly one feature');
      }
      const hard = e.hard![i] === 1;
      if (hard) sawHard++;
      else sawEasy++;
      for (let d = 0; d < levels; d++) {
        const expected = hard && d < expectHardDrop ? 0 : plan.patchesPerLevel[d];
        assert.equal(shown[d], expected, `${hard ? 'hard' : 'easy'} sample ${i}, depth ${d + 1}`);
      }
    }
  }
  assert.ok(sawHard > 0 && sawEasy > 0);
}

test('easy samples show every level in the configured patches; hard ones lack the dropped levels', () => {
  const base = [...SMALL, 'data.synthetic.noise=0', 'data.synthetic.hard_fraction_train=0.25', 'data.synthetic.hard_fraction_test=0.5'];
  // Default: hard samples keep only the finest level (drop = levels - 1 = 2).
  const c1 = cfgOf(...base, 'data.synthetic.patches_per_level=[3, 2, 1]', 'data.synthetic.strength=[1, 0.5, 2]');
  assert.deepEqual(planSynthetic(c1).patchesPerLevel, [3, 2, 1]);
  assert.deepEqual(planSynthetic(c1).strength, [1, 0.5, 2]);
  checkPatches(c1, 2);
  // Three channels (the (py, px, c) layout), two features per class, only the top level dropped.
  checkPatches(cfgOf(...base, 'data.channels=3', 'data.synthetic.features_per_class=2', 'data.synthetic.hard_drop_levels=1', 'data.synthetic.strength=[0.7]'), 1);
  // Default patches per level: floor(16 patches / (3 levels + 1)) = 4 each.
  assert.deepEqual(planSynthetic(cfgOf(...base)).patchesPerLevel, [4, 4, 4]);
  checkPatches(cfgOf(...base, 'data.synthetic.branching=[2, 2]', 'data.synthetic.hard_drop_levels=1'), 1);
});

test('shifts: commonScale scales only the coarsest features; noise scales with noiseScale', () => {
  const cfg = cfgOf(...SMALL, 'data.synthetic.noise=0', 'data.synthetic.patches_per_level=[1, 1, 1]');
  const plan = planSynthetic(cfg);
  const plain = renderSamples(plan, cfg, 24, 0, new Rng(9, 1), 's-');
  const shifted = renderSamples(plan, cfg, 24, 0, new Rng(9, 1), 's-', { commonScale: 0.25 });
  // Same draws: patches of level 1 are scaled by 0.25, the rest are identical.
  let scaled = 0;
  const p = readAll(plain.x);
  const q = readAll(shifted.x);
  for (let k = 0; k < p.length; k++) {
    if (p[k] === q[k]) continue;
    assert.ok(Math.abs(q[k] - 0.25 * p[k]) < 1e-6);
    scaled++;
  }
  assert.ok(scaled > 0);
  const noisy = renderSamples(plan, cfgOf(...SMALL, 'data.synthetic.noise=0.1'), 200, 0, new Rng(9, 2), 'n-', { noiseScale: 3 });
  // Noise std 0.1 x 3 = 0.3 per pixel; each sample adds 3 features of norm 1 over its 1024
  // pixels: sqrt(0.09 + 3 / 1024) = 0.305. Without noiseScale it would be about 0.1.
  let ss = 0;
  const nx = readAll(noisy.x);
  for (const v of nx) ss += v * v;
  const std = Math.sqrt(ss / nx.length);
  assert.ok(std > 0.29 && std < 0.32, `pixel std ${std}`);
});

test('config errors: too many features for the patch, image not a multiple of the patch, patch budget', () => {
  // 4 + 16 + 64 = 84 features > 8 x 8 x 1 = 64 dimensions.
  assert.throws(() => planSynthetic(cfgOf('data.synthetic.branching=[4, 4, 4]')), (e: unknown) => e instanceof UsageError && /84/.test(e.message) && /64/.test(e.message));
  // ...but three channels give 192 dimensions.
  assert.equal(planSynthetic(cfgOf('data.synthetic.branching=[4, 4, 4]', 'data.channels=3')).dim, 192);
  // 2 + 6 + 24 = 32 nodes x 3 features = 96 > 64.
  assert.throws(() => planSynthetic(cfgOf('data.synthetic.features_per_class=3')), UsageError);
  assert.throws(() => planSynthetic(cfgOf('data.image_size=30')), (e: unknown) => e instanceof UsageError && /image_size/.test(e.message) && /patch_size/.test(e.message));
  assert.throws(() => planSynthetic(cfgOf('data.synthetic.patches_per_level=[1, 1]')), (e: unknown) => e instanceof UsageError && /patches_per_level/.test(e.message));
  assert.throws(() => planSynthetic(cfgOf('data.synthetic.patches_per_level=[6, 6, 6]')), (e: unknown) => e instanceof UsageError && /18/.test(e.message));
});
