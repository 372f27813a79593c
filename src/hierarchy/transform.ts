import { nearest, UsageError } from '../util/errors';
import { Rng } from '../util/rng';
import { Hierarchy, Level } from './tree';

/**
 * Hierarchy transformations that the data.* keys ask for. Each returns a new
 * Hierarchy plus, for every old class, its new class index (or -1 if dropped),
 * so a loader can relabel its examples without touching pixels.
 */
export interface Transformed {
  hierarchy: Hierarchy;
  /** Old class index -> new class index, -1 = dropped. */
  classMap: Int32Array;
}

function nodeList(h: Hierarchy, keep?: Set<string>): Array<{ id: string; parent: string | null; name: string }> {
  const out: Array<{ id: string; parent: string | null; name: string }> = [];
  for (const n of h.nodes.values()) {
    if (n.id === h.root || (keep && !keep.has(n.id))) continue;
    out.push({ id: n.id, parent: n.parent === h.root ? null : n.parent, name: n.name });
  }
  return out;
}

/**
 * The node a user means by `spec`: an id, a path (names joined by '/'), or a
 * name (a WordNet name matches any of its comma-separated synonyms). A name
 * that several nodes carry is an error that lists their paths.
 */
export function findNode(h: Hierarchy, spec: string, key: string): string {
  // Names are compared in NFC (the loaders normalize what they read).
  const s = spec.trim().normalize('NFC');
  if (h.nodes.has(s) && s !== h.root) return s;
  const byPath: string[] = [];
  const byName: string[] = [];
  for (const n of h.nodes.values()) {
    if (n.id === h.root) continue;
    if (h.path(n.id) === s) byPath.push(n.id);
    else if (n.name === s || n.name.split(/,\s*/).includes(s)) byName.push(n.id);
  }
  if (byPath.length === 1) return byPath[0];
  const hits = byPath.length ? byPath : byName;
  if (hits.length === 1) return hits[0];
  if (hits.length > 1) {
    const paths = hits.map((id) => `${h.path(id)} (${id})`);
    throw new UsageError(`${key}: '${s}' is ambiguous: ${hits.length} nodes carry that name: ${paths.slice(0, 8).join('; ')}${hits.length > 8 ? '; ...' : ''}. Give the full path instead.`);
  }
  const names = [...h.nodes.values()].filter((n) => n.id !== h.root).map((n) => n.name);
  const guess = nearest(s, names);
  throw new UsageError(`${key}: no class or node '${s}' in the hierarchy.${guess ? ` Did you mean '${guess}'?` : ''} Run 'granular hierarchy' to see the classes.`);
}

/** Keep the classes under any `include` node (all if none), minus those under any `exclude` node. */
export function filterClasses(h: Hierarchy, include: readonly string[], exclude: readonly string[]): Transformed {
  const inc = new Set(include.map((s) => findNode(h, s, 'data.include')));
  const exc = new Set(exclude.map((s) => findNode(h, s, 'data.exclude')));
  const under = (c: string, set: Set<string>) => h.lineage(c).some((n) => set.has(n));
  const kept = h.classes.filter((c) => (inc.size === 0 || under(c, inc)) && !under(c, exc));
  if (kept.length === 0) {
    throw new UsageError(`data.include/data.exclude leave no class (include: [${include.join(', ')}], exclude: [${exclude.join(', ')}]). Run 'granular hierarchy' to see the classes.`);
  }
  const keep = new Set<string>();
  for (const c of kept) for (const n of h.lineage(c)) keep.add(n);
  const index = new Map(kept.map((c, i) => [c, i]));
  const classMap = Int32Array.from(h.classes, (c) => index.get(c) ?? -1);
  const hierarchy = new Hierarchy(h.root, nodeList(h, keep), kept, h.levelNames, h.dag);
  return { hierarchy, classMap };
}

/**
 * random_split:K — every class gets K pseudo-subclasses (`<class>#0..K-1`)
 * that become the dataset's classes; examples are dealt to them by the caller
 * (see `dealPseudoClasses`). The original classes stay as the level above.
 */
export function randomSplit(h: Hierarchy, k: number): Transformed & { pseudoOf: (oldClass: number, slot: number) => number } {
  if (k < 2) throw new UsageError(`data.relabel random_split:${k}: K must be at least 2.`);
  const parents = nodeList(h);
  const classes: string[] = [];
  for (const c of h.classes) {
    for (let j = 0; j < k; j++) {
      const id = `${c}#${j}`;
      parents.push({ id, parent: c, name: `${h.node(c).name}#${j}` });
      classes.push(id);
    }
  }
  const hierarchy = new Hierarchy(h.root, parents, classes, h.levelNames, h.dag);
  const classMap = Int32Array.from(h.classes, (_, i) => i * k);
  return { hierarchy, classMap, pseudoOf: (oldClass, slot) => oldClass * k + (slot % k) };
}

/**
 * shuffle_parents — the parents of the classes that are leaves are permuted
 * at random, so every parent keeps its number of children but the grouping
 * carries no meaning. Seeded by data.seed.
 */
export function shuffleParents(h: Hierarchy, seed: number): Transformed {
  const leaves = h.classes.filter((c) => h.node(c).children.length === 0 && h.node(c).parent !== null);
  const parents = leaves.map((c) => h.node(c).parent!);
  new Rng(seed, 404).shuffle(parents);
  const newParent = new Map(leaves.map((c, i) => [c, parents[i]]));
  const list = nodeList(h).map((n) => (newParent.has(n.id) ? { ...n, parent: newParent.get(n.id) === h.root ? null : newParent.get(n.id)! } : n));
  const hierarchy = new Hierarchy(h.root, list, h.classes, h.levelNames, h.dag);
  return { hierarchy, classMap: Int32Array.from(h.classes, (_, i) => i) };
}

/**
 * cluster:K — the tree above `level` is kept, each class of `level` gets K
 * pseudo-classes (`<class>#c0..c{K-1}`, named `<name>#c<j>`) that become the
 * dataset's classes, and the finer levels of the original tree are dropped
 * (the pseudo-classes replace them). Which example lands in which
 * pseudo-class is decided by the caller (k-means on features; see
 * data/labels/relabel.ts): `pseudoOf(levelClass, cluster)` gives its new class index.
 * The depth below the level is named `cluster` when every class of the level
 * sits at one depth.
 */
export function clusterSplit(h: Hierarchy, level: Level, k: number): { hierarchy: Hierarchy; pseudoOf: (levelClass: number, cluster: number) => number } {
  if (k < 2) throw new UsageError(`data.relabel cluster:${k}: K must be at least 2.`);
  const keep = new Set<string>();
  for (const c of level.classes) for (const n of h.lineage(c)) keep.add(n);
  const nodes = nodeList(h, keep);
  const classes: string[] = [];
  for (const c of level.classes) {
    for (let j = 0; j < k; j++) {
      const id = `${c}#c${j}`;
      nodes.push({ id, parent: c, name: `${h.node(c).name}#c${j}` });
      classes.push(id);
    }
  }
  const depths = new Set(level.classes.map((c) => h.node(c).depth));
  const names = new Map([...h.levelNames].filter(([d]) => d <= Math.min(...depths)));
  if (depths.size === 1) names.set([...depths][0] + 1, 'cluster');
  const hierarchy = new Hierarchy(h.root, nodes, classes, names, h.dag);
  return { hierarchy, pseudoOf: (levelClass, cluster) => levelClass * k + cluster };
}
