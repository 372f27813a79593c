import * as fs from 'node:fs';
import { UsageError } from '../util/errors';
import { describeCycle, findCycle, Hierarchy, treeFromDag } from './tree';

/** `parent child` per line (WordNet is_a edge list); blank lines and '#' comments skipped. */
export function readEdges(file: string): Array<[string, string]> {
  return readEdgeList(file).edges;
}

/** The edges of an is-a file, and the line each `parent child` pair is on (for messages). */
export function readEdgeList(file: string): { edges: Array<[string, string]>; lineOf: Map<string, number> } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new UsageError(`cannot read the is-a edge list '${file}' (one 'parent child' pair per line). Set data.is_a.`);
  }
  const edges: Array<[string, string]> = [];
  const lineOf = new Map<string, number>();
  const bad: number[] = [];
  text.split('\n').forEach((line, i) => {
    const t = line.trim();
    if (!t || t.startsWith('#')) return;
    // Names are compared in NFC, as folder names are.
    const parts = t.normalize('NFC').split(/\s+/);
    if (parts.length !== 2) bad.push(i + 1);
    else {
      edges.push([parts[0], parts[1]]);
      if (!lineOf.has(`${parts[0]} ${parts[1]}`)) lineOf.set(`${parts[0]} ${parts[1]}`, i + 1);
    }
  });
  if (bad.length) throw new UsageError(`${file}: ${bad.length} line(s) are not 'parent child' pairs, e.g. line(s) ${bad.slice(0, 5).join(', ')}.`);
  return { edges, lineOf };
}

/** `wnid<TAB>names` per line. */
export function readNames(file: string): Map<string, string> {
  const names = new Map<string, string>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const tab = line.indexOf('\t');
    if (tab > 0) names.set(line.slice(0, tab).trim().normalize('NFC'), line.slice(tab + 1).trim().normalize('NFC'));
  }
  return names;
}

export const VIRTUAL_ROOT = '__root__';

/**
 * The tree over `classes` from an is-a DAG: every class must be a node of the
 * graph; the root is the single ancestor without parents (a virtual root joins
 * several). A cycle is an error naming the file and the nodes on it (and
 * their lines, given `lineOf`).
 */
export function wordnetTree(
  edges: ReadonlyArray<[string, string]>,
  classes: readonly string[],
  names: ReadonlyMap<string, string> | undefined,
  source: string,
  lineOf?: ReadonlyMap<string, number>,
): Hierarchy {
  const parentsOf = new Map<string, string[]>();
  const known = new Set<string>();
  for (const [p, c] of edges) {
    known.add(p);
    known.add(c);
    if (!parentsOf.has(c)) parentsOf.set(c, []);
    parentsOf.get(c)!.push(p);
  }
  const unknown = classes.filter((c) => !known.has(c));
  // A lone class with no edges at all is an error: it has no place in the hierarchy.
  if (unknown.length) {
    throw new UsageError(`${unknown.length} class folder(s) are not nodes of ${source}: ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ', ...' : ''}. Add their is-a edges, or remove the folders.`);
  }
  const seen = new Set<string>();
  const stack = [...classes];
  const roots: string[] = [];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    const ps = parentsOf.get(n) ?? [];
    if (ps.length === 0) roots.push(n);
    for (const p of ps) stack.push(p);
  }
  if (roots.length === 0) {
    // Every node above the classes has a parent, so walking up from any class ends on a cycle.
    const cycle = findCycle(parentsOf, [...classes].sort()[0])!;
    throw new UsageError(`${source}: the is-a graph above the classes has a cycle (no node without a parent): ${describeCycle(cycle, lineOf)}. Remove one edge of the cycle.`);
  }
  if (roots.length === 1) return treeFromDag(edges, roots[0], classes, names, { file: source, lineOf });
  const joined: Array<[string, string]> = [...edges, ...roots.sort().map((r): [string, string] => [VIRTUAL_ROOT, r])];
  return treeFromDag(joined, VIRTUAL_ROOT, classes, names, { file: source, lineOf });
}
