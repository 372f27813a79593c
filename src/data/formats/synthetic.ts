import { Config } from '../../config/schema';
import { Hierarchy } from '../../hierarchy/tree';
import { UsageError } from '../../util/errors';
import { Rng } from '../../util/rng';
import { FloatStore } from '../cache/store';
import { Dataset, Examples, sharedFloat32 } from '../types';

/**
 * Hierarchical multi-view data (Hong et al. 2024), rendered as images.
 *
 * Every non-root class of the hierarchy owns `features_per_class` orthonormal
 * patch patterns. An image is a grid of patches; an easy sample shows, in
 * `patches_per_level[d]` random patches each, a feature of its ancestor at every
 * depth d; a hard sample lacks the common features (by default those of every
 * level above the leaves, `hard_drop_levels`) and shows only the finer ones. Every patch carries Gaussian noise. Coarse training can then fit
 * almost everything with the common features alone, and learns the rare fine
 * ones only if the labels force it to.
 */

const LEVEL_NAMES_3 = ['superclass', 'basic', 'subclass'];

export function syntheticHierarchy(branching: readonly number[]): Hierarchy {
  const names = new Map<number, string>();
  branching.forEach((_, i) => names.set(i + 1, branching.length === 3 ? LEVEL_NAMES_3[i] : `level${i + 1}`));
  const parents: Array<{ id: string; parent: string | null }> = [];
  let frontier = [''];
  for (const b of branching) {
    const next: string[] = [];
    for (const p of frontier) {
      for (let k = 0; k < b; k++) {
        const id = p === '' ? `${k}` : `${p}.${k}`;
        parents.push({ id, parent: p === '' ? null : p });
        next.push(id);
      }
    }
    frontier = next;
  }
  return new Hierarchy('root', parents, frontier, names);
}

/** Orthonormal columns by modified Gram-Schmidt on Gaussian vectors; returns [count x dim]. */
export function orthonormalPatterns(count: number, dim: number, rng: Rng): Float32Array {
  const basis: Float64Array[] = [];
  while (basis.length < count) {
    const v = Float64Array.from({ length: dim }, () => rng.normal());
    for (const b of basis) {
      let dot = 0;
      for (let i = 0; i < dim; i++) dot += v[i] * b[i];
      for (let i = 0; i < dim; i++) v[i] -= dot * b[i];
    }
    let norm = 0;
    for (let i = 0; i < dim; i++) norm += v[i] * v[i];
    norm = Math.sqrt(norm);
    if (norm < 1e-6) continue; // numerically dependent draw: try another
    for (let i = 0; i < dim; i++) v[i] /= norm;
    basis.push(v);
  }
  const out = new Float32Array(count * dim);
  basis.forEach((b, i) => out.set(b, i * dim));
  return out;
}

export interface SyntheticPlan {
  hierarchy: Hierarchy;
  grid: number;
  patch: number;
  dim: number;
  patchesPerLevel: number[];
  strength: number[];
  /** Feature rows per depth-1 index; featureIndex.get(nodeId) = first row in byDepth[depth-1]. */
  byDepth: Float32Array[];
  featureRow: Map<string, number>;
}

export function planSynthetic(cfg: Config): SyntheticPlan {
  const s = cfg.data.synthetic;
  const levels = s.branching.length;
  const size = cfg.data.image_size;
  if (size % s.patch_size !== 0) {
    throw new UsageError(`data.image_size (${size}) must be a multiple of data.synthetic.patch_size (${s.patch_size}).`);
  }
  const grid = size / s.patch_size;
  const P = grid * grid;
  const dim = s.patch_size * s.patch_size * syntheticChannels(cfg);
  const patchesPerLevel = s.patches_per_level ?? new Array(levels).fill(Math.max(1, Math.floor(P / (levels + 1))));
  if (patchesPerLevel.length !== levels) {
    throw new UsageError(`data.synthetic.patches_per_level has ${patchesPerLevel.length} entries; the hierarchy has ${levels} levels (data.synthetic.branching).`);
  }
  const used = patchesPerLevel.reduce((a, b) => a + b, 0);
  if (used > P) throw new UsageError(`data.synthetic.patches_per_level uses ${used} patches but an image has only ${P} (${grid}x${grid}).`);
  const hierarchy = syntheticHierarchy(s.branching);
  const rng = new Rng(cfg.data.seed, 101);
  const nodesByDepth: string[][] = Array.from({ length: levels }, () => []);
  for (const n of hierarchy.nodes.values()) if (n.depth >= 1) nodesByDepth[n.depth - 1].push(n.id);
  nodesByDepth.forEach((l) => l.sort());
  const total = nodesByDepth.reduce((a, l) => a + l.length, 0) * s.features_per_class;
  if (total > dim) {
    throw new UsageError(
      `synthetic data needs ${total} orthonormal features but a patch has only ${dim} dimensions. ` +
        `Increase data.synthetic.patch_size or data.channels, or reduce data.synthetic.branching or features_per_class.`,
    );
  }
  const all = orthonormalPatterns(total, dim, rng);
  const byDepth: Float32Array[] = [];
  const featureRow = new Map<string, number>();
  let row = 0;
  for (const nodes of nodesByDepth) {
    const count = nodes.length * s.features_per_class;
    byDepth.push(all.slice(row * dim, (row + count) * dim));
    nodes.forEach((id, i) => featureRow.set(id, i * s.features_per_class));
    row += count;
  }
  const strength = Array.from({ length: levels }, (_, i) => s.strength[Math.min(i, s.strength.length - 1)]);
  return { hierarchy, grid, patch: s.patch_size, dim, patchesPerLevel, strength, byDepth, featureRow };
}

/** Render `n` samples; `hardFraction` of them (exactly rounded) lack the coarsest features. */
export function renderSamples(
  plan: SyntheticPlan,
  cfg: Config,
  n: number,
  hardFraction: number,
  rng: Rng,
  idPrefix: string,
  shift: { commonScale?: number; noiseScale?: number } = {},
): Examples {
  const { hierarchy, grid, patch, dim } = plan;
  const C = syntheticChannels(cfg);
  const s = cfg.data.synthetic;
  const side = grid * patch;
  const K = hierarchy.classes.length;
  const P = grid * grid;
  const x = sharedFloat32(n * side * side * C);
  const y = new Int32Array(n);
  const hard = new Uint8Array(n);
  const ids: string[] = new Array(n);
  // Balanced classes, random order; an exact count of hard samples.
  for (let i = 0; i < n; i++) y[i] = i % K;
  rng.shuffle(y);
  for (const i of rng.sample(n, Math.round(hardFraction * n))) hard[i] = 1;
  const noise = s.noise * (shift.noiseScale ?? 1);
  const drop = s.hard_drop_levels ?? plan.patchesPerLevel.length - 1;
  const lineages = hierarchy.classes.map((c) => hierarchy.lineage(c));
  const vec = new Float32Array(dim);
  for (let i = 0; i < n; i++) {
    ids[i] = `${idPrefix}${i}`;
    const base = i * side * side * C;
    const order = rng.sample(P, P);
    const owner = new Int32Array(P).fill(-1); // depth index whose feature the patch shows
    let next = 0;
    plan.patchesPerLevel.forEach((count, d) => {
      for (let k = 0; k < count; k++) owner[order[next++]] = d;
    });
    for (let g = 0; g < P; g++) {
      const d = owner[g];
      vec.fill(0);
      if (d >= 0 && !(hard[i] && d < drop)) {
        const node = lineages[y[i]][d];
        const row = plan.featureRow.get(node)! + (s.features_per_class > 1 ? rng.int(s.features_per_class) : 0);
        const f = plan.byDepth[d].subarray(row * dim, (row + 1) * dim);
        const a = plan.strength[d] * (d === 0 ? (shift.commonScale ?? 1) : 1);
        for (let j = 0; j < dim; j++) vec[j] = a * f[j];
      }
      for (let j = 0; j < dim; j++) vec[j] += noise * rng.normal();
      // Patch vector layout is (py, px, c) row-major: the same order a patch
      // reshape of the image produces, so a filter and a feature compare directly.
      const gy = Math.floor(g / grid);
      const gx = g % grid;
      for (let py = 0; py < patch; py++) {
        for (let px = 0; px < patch; px++) {
          const pix = base + ((gy * patch + py) * side + gx * patch + px) * C;
          const src = (py * patch + px) * C;
          for (let c = 0; c < C; c++) x[pix + c] = vec[src + c];
        }
      }
    }
  }
  return { x: new FloatStore(x, [side, side, C]), y, ids, hard };
}

export function loadSynthetic(cfg: Config): Dataset {
  const plan = planSynthetic(cfg);
  const s = cfg.data.synthetic;
  const seed = cfg.data.seed;
  const train = renderSamples(plan, cfg, s.train_samples, s.hard_fraction_train, new Rng(seed, 201), 'train-');
  const test = renderSamples(plan, cfg, s.test_samples, s.hard_fraction_test, new Rng(seed, 301), 'test-');
  const side = plan.grid * plan.patch;
  return {
    hierarchy: plan.hierarchy,
    shape: [side, side, syntheticChannels(cfg)],
    train,
    test,
    features: { byDepth: plan.byDepth, dim: plan.dim },
    skipped: 0,
  };
}

export const SYNTHETIC_SHIFTS = ['weak_common', 'more_noise', 'all_hard'] as const;
export type SyntheticShift = (typeof SYNTHETIC_SHIFTS)[number];

/**
 * A shifted test set from the same generator (the theory's covariate shift):
 * `weak_common` scales the coarsest features by 1 - 0.2 s, `more_noise` the
 * noise by 1 + 0.5 s, `all_hard` raises the hard fraction to 0.5 + 0.1 s.
 * Severity 0 renders the ordinary test distribution.
 */
export function renderShifted(cfg: Config, shift: SyntheticShift, severity: number, n: number): Examples {
  const plan = planSynthetic(cfg);
  const s = cfg.data.synthetic;
  const rng = new Rng(cfg.data.seed, 700 + SYNTHETIC_SHIFTS.indexOf(shift) * 10 + severity);
  const hard = shift === 'all_hard' ? Math.min(1, s.hard_fraction_test + 0.1 * severity) : s.hard_fraction_test;
  return renderSamples(plan, cfg, n, hard, rng, `ood-${shift}${severity}-`, {
    commonScale: shift === 'weak_common' ? Math.max(0, 1 - 0.2 * severity) : 1,
    noiseScale: shift === 'more_noise' ? 1 + 0.5 * severity : 1,
  });
}

/** Channels of synthetic data: data.channels, where `auto` means 1 (the generator's features need no colour). */
export function syntheticChannels(cfg: Config): 1 | 3 {
  return cfg.data.channels === 'auto' ? 1 : cfg.data.channels;
}
