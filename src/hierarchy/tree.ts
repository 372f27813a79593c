import * as fs from 'node:fs';
import { nearest, UsageError } from '../util/errors';

/**
 * One name as a JSON Pointer token (RFC 6901): '~' -> '~0', '/' -> '~1'. Paths
 * and taxonomy node ids join such tokens with '/', so a name may contain any
 * character and a path still splits back into the same names.
 */
export function escapeName(name: string): string {
  return name.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** Names from the root down as one path string (each name escaped, joined by '/'). */
export function joinNames(names: readonly string[]): string {
  return names.map(escapeName).join('/');
}

/**
 * The class hierarchy as one rooted tree over the dataset's classes. Pure
 * TypeScript, no tensors: levels, cuts and label maps are cheap to test.
 */
export interface TreeNode {
  id: string;
  name: string;
  parent: string | null;
  children: string[];
  depth: number;
}

/** A label level: which class every dataset class maps to. */
export interface Level {
  /** Canonical name used in metric keys and folder names (`leaf`, `genus`, `depth2`). */
  name: string;
  /** What the user asked for (`depth:2`). */
  spec: string;
  /** Node ids of this level's classes; the index is the label. */
  classes: string[];
  /** For each dataset class (Hierarchy.classes index), its label here, or -1 if dropped. */
  classOf: Int32Array;
  /** Dataset classes that fall under no class of this level (only `nodes:FILE` drops). */
  droppedClasses: number;
}

export interface DagInfo {
  /** Nodes that had more than one parent in the source graph. */
  multiParentNodes: number;
  /** For each such node, the parent kept (longest path from the root, ties by id). */
  chosenParent: Record<string, string>;
  /** For each such node, every parent it has in the graph (is-a membership follows all of them: `nodes:FILE`). */
  allParents?: Record<string, string[]>;
}

export class Hierarchy {
  readonly nodes = new Map<string, TreeNode>();
  /** Preorder position of every node (children by id): a stable class order. */
  private readonly order = new Map<string, number>();
  readonly maxDepth: number;

  constructor(
    readonly root: string,
    parents: ReadonlyArray<{ id: string; parent: string | null; name?: string }>,
    /** The dataset's classes (may be internal nodes); index = leaf label. */
    readonly classes: readonly string[],
    /** Names of the levels by depth (1 = just below the root), if the source names them. */
    readonly levelNames: ReadonlyMap<number, string> = new Map(),
    readonly dag?: DagInfo,
  ) {
    for (const p of parents) {
      if (this.nodes.has(p.id)) throw new UsageError(`hierarchy: node '${p.id}' is listed twice.`);
      this.nodes.set(p.id, { id: p.id, name: p.name ?? p.id, parent: p.parent, children: [], depth: 0 });
    }
    if (!this.nodes.has(root)) this.nodes.set(root, { id: root, name: root, parent: null, children: [], depth: 0 });
    for (const n of this.nodes.values()) {
      if (n.id === root) continue;
      if (n.parent === null) n.parent = root;
      const p = this.nodes.get(n.parent);
      if (!p) throw new UsageError(`hierarchy: node '${n.id}' names a parent '${n.parent}' that does not exist.`);
      p.children.push(n.id);
    }
    // Depths and preorder by an explicit stack; a node never reached lies on a cycle.
    let idx = 0;
    let maxDepth = 0;
    const stack: Array<[string, number]> = [[root, 0]];
    while (stack.length) {
      const [id, d] = stack.pop()!;
      const n = this.nodes.get(id)!;
      n.depth = d;
      n.children.sort();
      this.order.set(id, idx++);
      for (let i = n.children.length - 1; i >= 0; i--) stack.push([n.children[i], d + 1]);
    }
    if (this.order.size !== this.nodes.size) {
      const lost = [...this.nodes.keys()].filter((k) => !this.order.has(k));
      throw new UsageError(`hierarchy: ${lost.length} node(s) are not reachable from the root (a cycle?): ${lost.slice(0, 5).join(', ')}`);
    }
    if (classes.length === 0) throw new UsageError('hierarchy: the dataset has no classes.');
    for (const c of classes) {
      const n = this.nodes.get(c);
      if (!n) throw new UsageError(`hierarchy: class '${c}' is not a node of the hierarchy.`);
      maxDepth = Math.max(maxDepth, n.depth);
    }
    this.maxDepth = maxDepth;
  }

  node(id: string): TreeNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node '${id}'`);
    return n;
  }

  /** Ancestors from just below the root down to the node itself. */
  lineage(id: string): string[] {
    const out: string[] = [];
    for (let cur: string | null = id; cur !== null && cur !== this.root; cur = this.node(cur).parent) out.push(cur);
    return out.reverse();
  }

  /**
   * Classes are identified by their path: names alone repeat across the tree.
   * Names are escaped as JSON Pointer tokens (`joinNames`), so a '/' inside a
   * name never reads as a level.
   */
  path(id: string): string {
    return joinNames(this.lineage(id).map((n) => this.node(n).name));
  }

  /** The deepest ancestor-or-self of `id` at depth <= d (the root if d = 0). */
  cutAt(id: string, d: number): string {
    const line = this.lineage(id);
    return d <= 0 || line.length === 0 ? this.root : line[Math.min(d, line.length) - 1];
  }

  private makeLevel(name: string, spec: string, target: (cls: string) => string | null): Level {
    const classOf = new Int32Array(this.classes.length);
    const mapped = this.classes.map(target);
    const uniq = [...new Set(mapped.filter((m): m is string => m !== null))];
    uniq.sort((a, b) => this.order.get(a)! - this.order.get(b)!);
    const index = new Map(uniq.map((u, i) => [u, i]));
    let dropped = 0;
    mapped.forEach((m, i) => {
      classOf[i] = m === null ? -1 : index.get(m)!;
      if (m === null) dropped++;
    });
    return { name, spec, classes: uniq, classOf, droppedClasses: dropped };
  }

  depthCut(d: number, spec = `depth:${d}`): Level {
    const named = this.levelNames.get(d);
    return this.makeLevel(named ?? `depth${d}`, spec, (c) => this.cutAt(c, d));
  }

  leafLevel(): Level {
    return this.makeLevel('leaf', 'leaf', (c) => c);
  }

  /** The coarsest depth cut with more than one class. */
  topLevel(spec = 'top'): Level {
    for (let d = 1; d <= this.maxDepth; d++) {
      const l = this.depthCut(d, spec);
      if (l.classes.length > 1) return l;
    }
    return this.leafLevel();
  }

  /** Every distinct depth cut from the top down, then the leaf level if it differs. */
  levels(): Level[] {
    const out: Level[] = [];
    for (let d = 1; d <= this.maxDepth; d++) {
      const l = this.depthCut(d);
      if (l.classes.length <= 1) continue;
      if (out.some((o) => sameLabels(o, l))) continue;
      out.push(l);
    }
    const leaf = this.leafLevel();
    if (!out.some((o) => sameLabels(o, leaf))) out.push(leaf);
    return out;
  }

  /** Resolve a `--level` spec; an unknown one fails with the list of valid ones. */
  resolveLevel(spec: string): Level {
    const s = spec.trim().normalize('NFC');
    let m: RegExpMatchArray | null;
    if (s === 'leaf') return this.leafLevel();
    if (s === 'top' || s === 'coarse') return this.topLevel(s);
    if ((m = s.match(/^depth:?(\d+)$/))) {
      const d = Number(m[1]);
      if (d < 1 || d > this.maxDepth) throw new UsageError(`level '${spec}': depth must be between 1 and ${this.maxDepth} for this hierarchy.`);
      return this.depthCut(d, s);
    }
    if ((m = s.match(/^height:?(\d+)$/))) {
      const h = Number(m[1]);
      if (h < 0 || h >= this.maxDepth) throw new UsageError(`level '${spec}': height must be between 0 and ${this.maxDepth - 1} for this hierarchy.`);
      return this.makeLevel(`height${h}`, s, (c) => {
        const line = this.lineage(c);
        return line[Math.max(0, line.length - 1 - h)];
      });
    }
    if ((m = s.match(/^nodes:(.+)$/))) return this.nodesLevel(m[1], s);
    for (const [d, n] of this.levelNames) if (n === s) return this.depthCut(d, s);
    const guess = nearest(s, [...this.levelNames.values(), 'leaf', 'top', 'coarse']);
    throw new UsageError(`unknown level '${spec}'.${guess ? ` Did you mean '${guess}'?` : ''} Valid levels: ${this.validLevelSpecs().join(', ')}.`);
  }

  validLevelSpecs(): string[] {
    const named = [...this.levelNames.entries()].sort((a, b) => a[0] - b[0]).map(([, n]) => n);
    return ['leaf', 'top', 'coarse', ...named, `depth:1..${this.maxDepth}`, `height:0..${this.maxDepth - 1}`, 'nodes:FILE'];
  }

  /**
   * Every ancestor of `id` in the source graph, by every is-a path (the tree
   * keeps one parent per node; a DAG's other parents are in dag.allParents),
   * the root included, `id` itself excluded.
   */
  graphAncestors(id: string): Set<string> {
    const out = new Set<string>();
    const parentsOf = (n: string): string[] => {
      const all = this.dag?.allParents?.[n];
      if (all) return all;
      const p = this.nodes.get(n)?.parent;
      return p ? [p] : [];
    };
    const stack = [...parentsOf(id)];
    while (stack.length) {
      const n = stack.pop()!;
      if (out.has(n)) continue;
      out.add(n);
      stack.push(...parentsOf(n));
    }
    return out;
  }

  /**
   * Each class takes the listed node it falls under, following every is-a
   * path of a DAG (X is-a B through any parent); of nested listed nodes the
   * most specific one. A class under two listed nodes neither of which is
   * under the other is a UsageError naming both (each image must take one
   * label). Classes under none are dropped.
   */
  private nodesLevel(file: string, spec: string): Level {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      throw new UsageError(`level '${spec}': cannot read the node list '${file}'.`);
    }
    // A line is a node id or path (names may hold spaces: 'Alpha one'); failing that, its first
    // word, so ImageNet-style lists ('n01440764 tench, Tinca tinca') work as they are.
    const listed = new Set(
      text
        .split(/\r?\n/)
        .map((l) => l.trim().normalize('NFC'))
        .filter((l) => l && !l.startsWith('#'))
        .map((l) => (this.nodes.has(l) ? l : l.split(/\s+/)[0])),
    );
    const unknown = [...listed].filter((n) => !this.nodes.has(n));
    if (unknown.length) throw new UsageError(`level '${spec}': ${unknown.length} listed node(s) are not in the hierarchy: ${unknown.slice(0, 5).join(', ')}`);
    const name = `nodes-${file.split('/').pop()!.replace(/\.[^.]*$/, '')}`;
    const ancestors = new Map<string, Set<string>>();
    const above = (n: string) => ancestors.get(n) ?? ancestors.set(n, this.graphAncestors(n)).get(n)!;
    return this.makeLevel(name, spec, (c) => {
      // Listed nodes that c is (itself, or by any is-a path); a listed root takes every class under no other listed node.
      const hits = [c, ...above(c)].filter((n) => listed.has(n));
      const specific = hits.filter((n) => !hits.some((m) => m !== n && above(m).has(n)));
      if (specific.length > 1) {
        const [a, b] = specific.sort();
        throw new UsageError(
          `level '${spec}': class '${c}' is under two listed nodes, '${a}' and '${b}' (neither is under the other), so its images would take two labels. ` +
            `Remove one of them from ${file}, or exclude the class with data.exclude.`,
        );
      }
      return specific[0] ?? null;
    });
  }
}

function sameLabels(a: Level, b: Level): boolean {
  return a.classes.length === b.classes.length && a.classOf.every((v, i) => v === b.classOf[i]);
}

/**
 * For each class of `fine`, its class in `coarse`, or null if `coarse` is not
 * a coarsening of `fine` (some fine class would straddle two coarse ones).
 */
export function coarsening(fine: Level, coarse: Level): Int32Array | null {
  if (coarse.classes.length >= fine.classes.length) return null;
  const map = new Int32Array(fine.classes.length).fill(-1);
  for (let i = 0; i < fine.classOf.length; i++) {
    const f = fine.classOf[i];
    const c = coarse.classOf[i];
    if (f < 0) continue;
    if (c < 0) return null;
    if (map[f] === -1) map[f] = c;
    else if (map[f] !== c) return null;
  }
  return map;
}

/** Levels of `h` that are strictly coarser than `level`, each with its label map. */
export function coarserLevels(h: Hierarchy, level: Level): Array<{ level: Level; map: Int32Array }> {
  const out: Array<{ level: Level; map: Int32Array }> = [];
  for (const l of h.levels()) {
    if (l.name === level.name) continue;
    const map = coarsening(level, l);
    if (map) out.push({ level: l, map });
  }
  return out;
}

/**
 * One cycle of an is-a graph, as the list of its nodes in edge order
 * (parent, child, grandchild, ..., back to the first), found by walking up
 * from `start` through parents that satisfy `onPath` (sorted, for a stable
 * answer) until a node repeats. Every node the walk may visit must have such
 * a parent (as nodes left over by Kahn's algorithm, or nodes of a graph with
 * no parentless node, do); null otherwise.
 */
export function findCycle(parentsOf: ReadonlyMap<string, readonly string[]>, start: string, onPath: (n: string) => boolean = () => true): string[] | null {
  const at = new Map<string, number>();
  const walk: string[] = [];
  for (let n: string | undefined = start; n !== undefined; ) {
    const seenAt = at.get(n);
    if (seenAt !== undefined) return walk.slice(seenAt).reverse(); // child-to-parent order turned round
    at.set(n, walk.length);
    walk.push(n);
    n = [...(parentsOf.get(n) ?? [])].filter(onPath).sort()[0];
  }
  return null;
}

/** "a -> b -> c -> a", with the lines of those edges when known. */
export function describeCycle(cycle: readonly string[], lineOf?: ReadonlyMap<string, number>): string {
  const edges = cycle.map((n, i) => [n, cycle[(i + 1) % cycle.length]]);
  const lines = lineOf ? edges.map(([p, c]) => lineOf.get(`${p} ${c}`)).filter((l): l is number => l !== undefined) : [];
  return `${[...cycle, cycle[0]].join(' -> ')}${lines.length ? ` (line${lines.length > 1 ? 's' : ''} ${lines.join(', ')})` : ''}`;
}

/**
 * Turn a DAG (edges parent -> child) into a tree once: each node keeps the
 * parent on its longest path from the root, ties broken by id.
 */
export function treeFromDag(
  edges: ReadonlyArray<[string, string]>,
  root: string,
  classes: readonly string[],
  names?: ReadonlyMap<string, string>,
  /** Where the edges came from, for messages: the file, and the line of each 'parent child' edge. */
  source?: { file: string; lineOf?: ReadonlyMap<string, number> },
): Hierarchy {
  const parentsOf = new Map<string, string[]>();
  const childrenOf = new Map<string, string[]>();
  for (const [p, c] of edges) {
    if (!parentsOf.has(c)) parentsOf.set(c, []);
    parentsOf.get(c)!.push(p);
    if (!childrenOf.has(p)) childrenOf.set(p, []);
    childrenOf.get(p)!.push(c);
  }
  // Only the ancestors of the classes matter.
  const keep = new Set<string>();
  const stack = [...classes];
  while (stack.length) {
    const n = stack.pop()!;
    if (keep.has(n)) continue;
    keep.add(n);
    for (const p of parentsOf.get(n) ?? []) stack.push(p);
  }
  if (!keep.has(root)) throw new UsageError(`hierarchy: the root '${root}' is not an ancestor of any class.`);
  // Longest-path depth by Kahn's algorithm over the kept subgraph; leftovers are a cycle.
  const indeg = new Map<string, number>();
  for (const n of keep) indeg.set(n, (parentsOf.get(n) ?? []).filter((p) => keep.has(p)).length);
  const longest = new Map<string, number>();
  const queue = [...keep].filter((n) => indeg.get(n) === 0);
  const rootless = queue.filter((n) => n !== root);
  if (rootless.length) throw new UsageError(`hierarchy: ${rootless.length} node(s) have no path to the root '${root}': ${rootless.slice(0, 5).join(', ')}`);
  longest.set(root, 0);
  let seen = 0;
  while (queue.length) {
    const n = queue.shift()!;
    seen++;
    for (const c of childrenOf.get(n) ?? []) {
      if (!keep.has(c)) continue;
      longest.set(c, Math.max(longest.get(c) ?? 0, longest.get(n)! + 1));
      indeg.set(c, indeg.get(c)! - 1);
      if (indeg.get(c) === 0) queue.push(c);
    }
  }
  if (seen !== keep.size) {
    // Nodes left over are on a cycle or below one; walking up through left-over parents finds one.
    const left = (n: string) => keep.has(n) && indeg.get(n)! > 0;
    const cycle = findCycle(parentsOf, [...keep].filter(left).sort()[0], left)!;
    throw new UsageError(`${source?.file ?? 'hierarchy'}: the is-a graph has a cycle: ${describeCycle(cycle, source?.lineOf)}. Remove one edge of the cycle.`);
  }
  const chosenParent: Record<string, string> = {};
  const allParents: Record<string, string[]> = {};
  let multi = 0;
  const parents: Array<{ id: string; parent: string | null; name?: string }> = [];
  for (const n of keep) {
    if (n === root) continue;
    const ps = [...new Set((parentsOf.get(n) ?? []).filter((p) => keep.has(p)))];
    let best = ps[0];
    for (const p of ps) {
      const dp = longest.get(p)!;
      const db = longest.get(best)!;
      if (dp > db || (dp === db && p < best)) best = p;
    }
    if (ps.length > 1) {
      multi++;
      chosenParent[n] = best;
      allParents[n] = ps.sort();
    }
    parents.push({ id: n, parent: best, name: names?.get(n) });
  }
  return new Hierarchy(root, parents, classes, new Map(), { multiParentNodes: multi, chosenParent, allParents });
}
