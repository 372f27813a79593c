import { Hierarchy, Level } from '../hierarchy/tree';

/**
 * Mistake severity (Bertinetto et al. 2020, "Making Better Mistakes:
 * Leveraging Class Hierarchies with Deep Networks", CVPR; DESIGN.md
 * "Mistake severity"). Pure functions on label arrays and row-major
 * probability matrices: no tensors.
 *
 * The height of the lowest common ancestor (LCA) of two classes of a level is
 * counted in levels of the tree, from the deeper of the two classes up to
 * their LCA: max(depth(a), depth(b)) - depth(LCA(a, b)). It is 0 exactly when
 * a = b. When the level's classes all sit at one depth (every cut of a
 * taxonomy.csv, Omniglot or iNat tree; every depth cut of a balanced tree)
 * this is the LCA's height as Bertinetto et al. use it (leaves at height 0);
 * for classes at different depths (a WordNet class that is an ancestor of
 * another) it says how far up from the more specific class the two meet.
 */
export class LcaHeights {
  /** Node ids from just below the root down to each class of the level. */
  private readonly lineages: string[][];

  constructor(h: Hierarchy, level: Pick<Level, 'classes'>) {
    this.lineages = level.classes.map((c) => h.lineage(c));
  }

  get numClasses(): number {
    return this.lineages.length;
  }

  /** Height of LCA(a, b) in levels (see the class comment); a, b are class indices of the level. */
  height(a: number, b: number): number {
    if (a === b) return 0;
    const la = this.lineages[a];
    const lb = this.lineages[b];
    let common = 0;
    while (common < la.length && common < lb.length && la[common] === lb[common]) common++;
    return Math.max(la.length, lb.length) - common;
  }
}

/**
 * `test_mistake_severity`: the mean LCA height of prediction and truth over
 * the wrongly classified examples (pred[i] != labels[i]); NaN when there is no
 * mistake (the mean over an empty set). Shapes: pred, labels [N] class indices
 * of the level `lca` was built for.
 */
export function mistakeSeverity(pred: Int32Array, labels: Int32Array, lca: LcaHeights): number {
  let sum = 0;
  let wrong = 0;
  for (let i = 0; i < pred.length; i++) {
    if (pred[i] === labels[i]) continue;
    sum += lca.height(pred[i], labels[i]);
    wrong++;
  }
  return wrong ? sum / wrong : NaN;
}

/**
 * The k classes of one row with the largest probabilities, largest first;
 * ties go to the lower class index (a stable order, as a stable sort gives).
 */
export function topK(probs: Float32Array, numClasses: number, row: number, k: number): number[] {
  const base = row * numClasses;
  const idx = Array.from({ length: numClasses }, (_, j) => j);
  idx.sort((a, b) => probs[base + b] - probs[base + a] || a - b);
  return idx.slice(0, Math.min(k, numClasses));
}

/**
 * `test_hdist@k` ("average hierarchical distance of top-k", Bertinetto et
 * al.): the mean over examples of the mean LCA height between the true class
 * and each of the k most probable classes (the true class, if among them,
 * contributes 0). probs: [N x K] row-major; labels: [N]. NaN for N = 0.
 * With fewer than k classes every class is in the top k.
 */
export function hierarchicalDistanceAtK(probs: Float32Array, numClasses: number, labels: Int32Array, lca: LcaHeights, k: number): number {
  const n = labels.length;
  if (n === 0) return NaN;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const top = topK(probs, numClasses, i, k);
    let s = 0;
    for (const c of top) s += lca.height(c, labels[i]);
    total += s / top.length;
  }
  return total / n;
}
