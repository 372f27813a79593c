import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Hierarchy, Level, coarsening, coarserLevels, treeFromDag } from '../src/hierarchy/tree';
import { syntheticHierarchy } from '../src/data/formats/synthetic';
import { UsageError } from '../src/util/errors';

/** ../shared/data/wordnet beside the checkout: the nearest ancestor of this file that has it. */
function findWordnet(): string {
  for (let d = __dirname; ; d = path.dirname(d)) {
    const candidate = path.join(d, 'shared', 'data', 'wordnet');
    if (fs.existsSync(candidate)) return candidate;
    if (path.dirname(d) === d) return path.resolve(__dirname, '..', '..', '..', 'shared', 'data', 'wordnet');
  }
}
const WORDNET = findWordnet();

/** The class (node id) each dataset class gets at a level; null if dropped. */
function nodeOf(l: Level, i: number): string | null {
  return l.classOf[i] < 0 ? null : l.classes[l.classOf[i]];
}

function isAncestorOrSelf(h: Hierarchy, anc: string, id: string): boolean {
  for (let cur: string | null = id; cur !== null; cur = h.node(cur).parent) if (cur === anc) return true;
  return false;
}

/**
 * `fine` refines `coarse`: coarsening() finds the label map when `fine` has more
 * classes, and with equally many the two are the same partition. Either way, the
 * coarse class node is an ancestor-or-self of the fine class node.
 */
function assertRefines(h: Hierarchy, fine: Level, coarse: Level, what: string): void {
  for (let i = 0; i < h.classes.length; i++) {
    const f = nodeOf(fine, i);
    const c = nodeOf(coarse, i);
    assert.ok(f !== null && c !== null, `${what}: class ${h.classes[i]} dropped`);
    assert.ok(isAncestorOrSelf(h, c, f), `${what}: ${c} is not above ${f}`);
  }
  if (fine.classes.length > coarse.classes.length) {
    const map = coarsening(fine, coarse);
    assert.ok(map, `${what}: coarsening() found no map`);
    for (let i = 0; i < h.classes.length; i++) assert.equal(map[fine.classOf[i]], coarse.classOf[i], `${what}: class ${i}`);
  } else {
    assert.equal(fine.classes.length, coarse.classes.length, `${what}: the finer level has fewer classes`);
    assert.equal(coarsening(fine, coarse), null, 'coarsening() only maps to strictly coarser levels');
    // Same partition: fine label <-> coarse label is a bijection.
    const f2c = new Map<number, number>();
    const c2f = new Map<number, number>();
    for (let i = 0; i < h.classes.length; i++) {
      const [f, c] = [fine.classOf[i], coarse.classOf[i]];
      assert.equal(f2c.get(f) ?? c, c, `${what}: same partition`);
      assert.equal(c2f.get(c) ?? f, f, `${what}: same partition`);
      f2c.set(f, c);
      c2f.set(c, f);
    }
  }
}

/** Independent definition of the cut: walk up the parents to the deepest ancestor-or-self at depth <= d. */
function expectedCut(h: Hierarchy, id: string, d: number): string {
  let cur = id;
  while (h.node(cur).depth > d) cur = h.node(cur).parent!;
  return cur;
}

function assertAllCutsNest(h: Hierarchy, what: string): void {
  const cuts = Array.from({ length: h.maxDepth }, (_, k) => h.depthCut(k + 1));
  cuts.forEach((l, k) => {
    for (let i = 0; i < h.classes.length; i++) assert.equal(nodeOf(l, i), expectedCut(h, h.classes[i], k + 1), `${what}: cut ${k + 1} of ${h.classes[i]}`);
  });
  for (let a = 0; a < cuts.length; a++) {
    for (let b = a + 1; b < cuts.length; b++) assertRefines(h, cuts[b], cuts[a], `${what}: depth ${b + 1} vs ${a + 1}`);
    assertRefines(h, h.leafLevel(), cuts[a], `${what}: leaf vs depth ${a + 1}`);
  }
}

/**
 *   root
 *   ├─ A ─┬─ A1*            (* = dataset class)
 *   │     └─ A2* ── A2x*     (A2 is a class and an internal node)
 *   ├─ B ── B1 ── B1a* ── B1a_i*
 *   └─ C*                   (a class at depth 1)
 */
function irregular(): Hierarchy {
  return new Hierarchy(
    'root',
    [
      { id: 'A', parent: null },
      { id: 'A1', parent: 'A' },
      { id: 'A2', parent: 'A' },
      { id: 'A2x', parent: 'A2' },
      { id: 'B', parent: null },
      { id: 'B1', parent: 'B' },
      { id: 'B1a', parent: 'B1' },
      { id: 'B1a_i', parent: 'B1a' },
      { id: 'C', parent: 'root' },
    ],
    ['A1', 'A2', 'A2x', 'B1a', 'B1a_i', 'C'],
  );
}

test('depth cuts of a hand-made irregular tree (classes at different depths, internal classes)', () => {
  const h = irregular();
  assert.equal(h.maxDepth, 4);
  // Labels follow preorder of the nodes (children by id), per class in order A1, A2, A2x, B1a, B1a_i, C.
  const d1 = h.resolveLevel('depth:1');
  assert.deepEqual(d1.classes, ['A', 'B', 'C']);
  assert.deepEqual([...d1.classOf], [0, 0, 0, 1, 1, 2]);
  assert.equal(d1.name, 'depth1');
  assert.equal(d1.spec, 'depth:1');
  const d2 = h.resolveLevel('depth:2');
  assert.deepEqual(d2.classes, ['A1', 'A2', 'B1', 'C']);
  assert.deepEqual([...d2.classOf], [0, 1, 1, 2, 2, 3]);
  const d3 = h.resolveLevel('depth3'); // the colon is optional
  assert.deepEqual(d3.classes, ['A1', 'A2', 'A2x', 'B1a', 'C']);
  assert.deepEqual([...d3.classOf], [0, 1, 2, 3, 3, 4]);
  const d4 = h.resolveLevel('depth:4');
  assert.deepEqual([...d4.classOf], [0, 1, 2, 3, 4, 5]);
  const leaf = h.resolveLevel('leaf');
  assert.deepEqual(leaf.classes, ['A1', 'A2', 'A2x', 'B1a', 'B1a_i', 'C']);
  for (const l of [d1, d2, d3, d4, leaf]) assert.equal(l.droppedClasses, 0);
  assertAllCutsNest(h, 'irregular');
  // levels(): every distinct cut; depth:4 already equals the leaf labels, so no extra leaf level.
  assert.deepEqual(h.levels().map((l) => l.name), ['depth1', 'depth2', 'depth3', 'depth4']);
});

test('depth cuts nest for synthetic trees', () => {
  for (const b of [[2, 3, 4], [3, 2], [2, 2, 2, 2], [1, 3, 2], [2, 1, 3]]) {
    const h = syntheticHierarchy(b);
    assert.equal(h.maxDepth, b.length);
    assert.equal(h.classes.length, b.reduce((x, y) => x * y, 1));
    for (let d = 1; d <= b.length; d++) {
      const expected = b.slice(0, d).reduce((x, y) => x * y, 1);
      assert.equal(h.depthCut(d).classes.length, expected, `branching ${b} depth ${d}`);
    }
    assertAllCutsNest(h, `branching ${b}`);
  }
});

test('synthetic level names resolve to depth cuts', () => {
  const h = syntheticHierarchy([2, 3, 4]);
  const basic = h.resolveLevel('basic');
  assert.equal(basic.name, 'basic');
  assert.deepEqual([...basic.classOf], [...h.depthCut(2).classOf]);
  assert.equal(h.resolveLevel('superclass').classes.length, 2);
  assert.equal(h.resolveLevel('depth:1').name, 'superclass', 'a named depth keeps its canonical name');
});

test('top/coarse is the coarsest level with more than one class', () => {
  // root ─ X ─┬─ P ─┬─ p1, p2
  //           └─ Q ─── q1
  const h = new Hierarchy(
    'root',
    [
      { id: 'X', parent: null },
      { id: 'P', parent: 'X' },
      { id: 'Q', parent: 'X' },
      { id: 'p1', parent: 'P' },
      { id: 'p2', parent: 'P' },
      { id: 'q1', parent: 'Q' },
    ],
    ['p1', 'p2', 'q1'],
  );
  assert.equal(h.depthCut(1).classes.length, 1);
  for (const spec of ['top', 'coarse']) {
    const top = h.resolveLevel(spec);
    assert.deepEqual(top.classes, ['P', 'Q'], spec);
    assert.deepEqual([...top.classOf], [0, 0, 1]);
    assert.equal(top.spec, spec);
  }
  // levels() skips the single-class cut.
  assert.deepEqual(h.levels().map((l) => l.classes.length), [2, 3]);
  // Synthetic: branching [1, 3, 2] has a single superclass.
  const s = syntheticHierarchy([1, 3, 2]);
  assert.equal(s.resolveLevel('top').classes.length, 3);
  assert.equal(syntheticHierarchy([2, 3, 4]).resolveLevel('coarse').classes.length, 2);
});

test('height:N counts steps up from each class', () => {
  const h = irregular();
  // Classes A1, A2, A2x, B1a, B1a_i, C; one step up: A, A, A2, B1, B1a, and C stays C (nothing
  // between it and the root).
  const h1 = h.resolveLevel('height:1');
  assert.equal(h1.name, 'height1');
  assert.deepEqual([...h1.classOf].map((c) => h1.classes[c]), ['A', 'A', 'A2', 'B1', 'B1a', 'C']);
  const h0 = h.resolveLevel('height:0');
  assert.deepEqual([...h0.classOf].map((c) => h0.classes[c]), [...h.classes]);
  const h3 = h.resolveLevel('height:3');
  assert.deepEqual([...h3.classOf].map((c) => h3.classes[c]), ['A', 'A', 'A', 'B', 'B', 'C']);
  // On a balanced tree height:N equals depth:(maxDepth - N).
  const s = syntheticHierarchy([2, 3, 4]);
  assert.deepEqual([...s.resolveLevel('height:1').classOf], [...s.depthCut(2).classOf]);
  assert.deepEqual([...s.resolveLevel('height:2').classOf], [...s.depthCut(1).classOf]);
  assert.throws(() => h.resolveLevel('height:4'), UsageError);
});

test('nodes:FILE keeps the deepest listed node and drops and counts the rest', () => {
  const h = irregular();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'granular-nodes-'));
  const f1 = path.join(dir, 'picked.txt');
  fs.writeFileSync(f1, '# a comment\nA2\n\nB  extra words after the id\n');
  const l1 = h.resolveLevel(`nodes:${f1}`);
  assert.equal(l1.name, 'nodes-picked');
  assert.deepEqual(l1.classes, ['A2', 'B']);
  // A1 and C fall under no listed node.
  assert.deepEqual([...l1.classOf], [-1, 0, 0, 1, 1, -1]);
  assert.equal(l1.droppedClasses, 2);
  // Nested listed nodes: the deepest one wins.
  const f2 = path.join(dir, 'nested.txt');
  fs.writeFileSync(f2, 'A\r\nA2\r\nB\r\nB1a\r\n');
  const l2 = h.resolveLevel(`nodes:${f2}`);
  assert.deepEqual([...l2.classOf].map((c) => l2.classes[c]), ['A', 'A2', 'A2', 'B1a', 'B1a', undefined]);
  assert.equal(l2.droppedClasses, 1);
  // nodes-picked (A2, B) is not a coarsening of nodes-nested (A, A2, B1a): A1 is kept by
  // nested (as A) but dropped by picked.
  assert.equal(coarsening(l2, l1), null);
  // Listing A and B instead drops the same class (C) as nested: A, A2 -> A and B1a -> B.
  const f4 = path.join(dir, 'ab.txt');
  fs.writeFileSync(f4, 'A\nB\n');
  assert.deepEqual([...coarsening(l2, h.resolveLevel(`nodes:${f4}`))!], [0, 0, 1]);
  const f3 = path.join(dir, 'bad.txt');
  fs.writeFileSync(f3, 'A\nnot-a-node\n');
  assert.throws(() => h.resolveLevel(`nodes:${f3}`), (e: unknown) => e instanceof UsageError && /not-a-node/.test(e.message));
  assert.throws(() => h.resolveLevel(`nodes:${path.join(dir, 'missing.txt')}`), (e: unknown) => e instanceof UsageError && /cannot read/.test(e.message));
});

test('nodes:FILE listing the root keeps every class (everything falls under the root)', () => {
  const h = irregular();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'granular-nodes-'));
  const f = path.join(dir, 'root.txt');
  fs.writeFileSync(f, 'A\nroot\n');
  const l = h.resolveLevel(`nodes:${f}`);
  assert.deepEqual([...l.classOf].map((c) => l.classes[c]), ['A', 'A', 'A', 'root', 'root', 'root']);
  assert.equal(l.droppedClasses, 0);
});

test('an unknown level fails with the list of valid ones', () => {
  const h = syntheticHierarchy([2, 3, 4]);
  assert.throws(
    () => h.resolveLevel('genus'),
    (e: unknown) =>
      e instanceof UsageError &&
      /unknown level 'genus'/.test(e.message) &&
      ['leaf', 'top', 'coarse', 'superclass', 'basic', 'subclass', 'depth:1..3', 'height:0..2', 'nodes:FILE'].every((s) => e.message.includes(s)),
  );
  assert.throws(() => h.resolveLevel('depth:0'), (e: unknown) => e instanceof UsageError && /between 1 and 3/.test(e.message));
  assert.throws(() => h.resolveLevel('depth:4'), (e: unknown) => e instanceof UsageError && /between 1 and 3/.test(e.message));
  assert.throws(() => irregular().resolveLevel('depth:x'), (e: unknown) => e instanceof UsageError && /depth:1\.\.4/.test(e.message));
});

test('coarserLevels lists strictly coarser levels with their label maps', () => {
  const s = syntheticHierarchy([2, 3, 4]);
  const fromLeaf = coarserLevels(s, s.resolveLevel('leaf'));
  assert.deepEqual(fromLeaf.map((c) => c.level.name), ['superclass', 'basic']);
  // Leaf class k of 24 = (superclass, basic, subclass) digits in base (2, 3, 4): basic = floor(k / 4).
  assert.deepEqual([...fromLeaf[1].map], Array.from({ length: 24 }, (_, k) => Math.floor(k / 4)));
  assert.deepEqual([...fromLeaf[0].map], Array.from({ length: 24 }, (_, k) => Math.floor(k / 12)));
  const fromBasic = coarserLevels(s, s.resolveLevel('basic'));
  assert.deepEqual(fromBasic.map((c) => c.level.name), ['superclass']);
  assert.deepEqual([...fromBasic[0].map], [0, 0, 0, 1, 1, 1]);
  assert.deepEqual(coarserLevels(s, s.resolveLevel('superclass')), []);
  // A level spelled differently but equal to one of the levels is not "coarser" than itself.
  assert.deepEqual(coarserLevels(s, s.resolveLevel('height:1')).map((c) => c.level.name), ['superclass']);
  // Irregular tree: from depth2 (A1, A2, B1, C) only depth1 (A, B, C) is coarser.
  const h = irregular();
  const fromD2 = coarserLevels(h, h.depthCut(2));
  assert.deepEqual(fromD2.map((c) => c.level.name), ['depth1']);
  assert.deepEqual([...fromD2[0].map], [0, 0, 1, 2]);
});

test('coarsening refuses a level that straddles', () => {
  const h = irregular();
  // height:1 maps A1, A2, A2x, B1a, B1a_i, C to A, A, A2, B1, B1a, C (5 classes); depth:2 has
  // 4 classes (A1, A2, B1, C), so the count allows a map, but height:1's class A holds A1 and
  // A2, which depth:2 keeps apart: no coarsening.
  const h1 = h.resolveLevel('height:1');
  const d2 = h.depthCut(2);
  assert.ok(d2.classes.length < h1.classes.length);
  assert.equal(coarsening(h1, d2), null);
  // Not a coarsening of itself, nor of a finer level.
  assert.equal(coarsening(d2, d2), null);
  assert.equal(coarsening(d2, h.leafLevel()), null);
});

test('path() identifies classes whose names repeat', () => {
  const h = new Hierarchy(
    'root',
    [
      { id: 'k1', parent: null, name: 'Animalia' },
      { id: 'k2', parent: null, name: 'Plantae' },
      { id: 'g1', parent: 'k1', name: 'Morus' },
      { id: 'g2', parent: 'k2', name: 'Morus' },
    ],
    ['g1', 'g2'],
  );
  assert.equal(h.path('g1'), 'Animalia/Morus');
  assert.equal(h.path('g2'), 'Plantae/Morus');
});

test('Hierarchy constructor rejects malformed trees', () => {
  assert.throws(() => new Hierarchy('r', [{ id: 'a', parent: null }, { id: 'a', parent: null }], ['a']), /listed twice/);
  assert.throws(() => new Hierarchy('r', [{ id: 'a', parent: 'zz' }], ['a']), /'zz'/);
  assert.throws(() => new Hierarchy('r', [{ id: 'a', parent: null }], ['b']), /class 'b'/);
  assert.throws(() => new Hierarchy('r', [{ id: 'a', parent: null }], []), /no classes/);
  assert.throws(
    () => new Hierarchy('r', [{ id: 'a', parent: null }, { id: 'x', parent: 'y' }, { id: 'y', parent: 'x' }], ['a']),
    (e: unknown) => e instanceof UsageError && /not reachable/.test(e.message) && /x/.test(e.message),
  );
});

test('treeFromDag keeps the parent on the longest path, ties broken by id', () => {
  // r ─┬─ a ─┬─ x ── leaf1      x has parents a (depth 1) and b2 (depth 2): keeps b2
  //    │     └─ y ── leaf2      y has parents a and b (both depth 1): keeps a (smaller id)
  //    ├─ b ─┬─ b2 ── x
  //    │     └─ y
  //    ├─ z ── leaf3
  //    └─ junk ── junk2        (not above any class: dropped)
  const edges: Array<[string, string]> = [
    ['r', 'a'], ['r', 'b'], ['a', 'x'], ['b', 'b2'], ['b2', 'x'], ['b', 'y'], ['a', 'y'], ['a', 'x'],
    ['x', 'leaf1'], ['y', 'leaf2'], ['r', 'z'], ['z', 'leaf3'], ['r', 'junk'], ['junk', 'junk2'],
  ];
  const names = new Map([['leaf1', 'first leaf']]);
  const h = treeFromDag(edges, 'r', ['leaf1', 'leaf2', 'leaf3', 'b'], names);
  assert.equal(h.node('x').parent, 'b2');
  assert.equal(h.node('y').parent, 'a');
  assert.equal(h.node('b2').parent, 'b');
  assert.equal(h.node('leaf1').depth, 4);
  assert.equal(h.node('leaf2').depth, 3);
  assert.equal(h.node('leaf3').depth, 2);
  assert.ok(!h.nodes.has('junk') && !h.nodes.has('junk2'));
  assert.equal(h.nodes.size, 10);
  assert.deepEqual(h.dag, { multiParentNodes: 2, chosenParent: { x: 'b2', y: 'a' }, allParents: { x: ['a', 'b2'], y: ['a', 'b'] } });
  assert.equal(h.path('leaf1'), 'b/b2/x/first leaf');
  assert.equal(h.maxDepth, 4);
  assertAllCutsNest(h, 'small DAG');
  // Ties by id do not depend on edge order.
  const reversed = treeFromDag([...edges].reverse(), 'r', ['leaf1', 'leaf2', 'leaf3', 'b']);
  assert.equal(reversed.node('y').parent, 'a');
  assert.equal(reversed.node('x').parent, 'b2');
});

test('treeFromDag reports cycles and nodes without a path to the root', () => {
  const cyc: Array<[string, string]> = [['r', 'a'], ['a', 'b'], ['b', 'c'], ['c', 'a'], ['c', 'leaf']];
  assert.throws(() => treeFromDag(cyc, 'r', ['leaf']), (e: unknown) => e instanceof UsageError && /cycle/.test(e.message) && /\ba\b/.test(e.message));
  assert.throws(() => treeFromDag([['r', 'a'], ['q', 'b']], 'r', ['a', 'b']), (e: unknown) => e instanceof UsageError && /no path to the root/.test(e.message) && /q/.test(e.message));
  assert.throws(() => treeFromDag([['q', 'a']], 'r', ['a']), (e: unknown) => e instanceof UsageError && /root 'r'/.test(e.message));
});

test('treeFromDag on the real WordNet graph with the ImageNet-1k classes', (t) => {
  const isA = path.join(WORDNET, 'wordnet.is_a.txt');
  const info = path.join(WORDNET, 'imagenet1k_class_info.json');
  if (!fs.existsSync(isA) || !fs.existsSync(info)) {
    t.skip(`WordNet data not found under ${WORDNET} (../shared/data/wordnet)`);
    return;
  }
  const edges: Array<[string, string]> = [];
  for (const line of fs.readFileSync(isA, 'utf8').split('\n')) {
    const [p, c] = line.trim().split(/\s+/);
    if (p && c) edges.push([p, c]);
  }
  const classes = (JSON.parse(fs.readFileSync(info, 'utf8')) as Array<[number, string, string]>).map((e) => e[1]);
  assert.equal(classes.length, 1000);
  const root = 'n00001740';
  const h = treeFromDag(edges, root, classes);

  const parentsOf = new Map<string, Set<string>>();
  for (const [p, c] of edges) {
    if (!parentsOf.has(c)) parentsOf.set(c, new Set());
    parentsOf.get(c)!.add(p);
  }
  // Independent longest-path depth by memoised recursion over the kept ancestors.
  const longest = new Map<string, number>([[root, 0]]);
  const depthOf = (n: string): number => {
    const known = longest.get(n);
    if (known !== undefined) return known;
    let best = -Infinity;
    for (const p of parentsOf.get(n) ?? []) if (h.nodes.has(p)) best = Math.max(best, depthOf(p) + 1);
    longest.set(n, best);
    return best;
  };
  let multi = 0;
  for (const n of h.nodes.values()) {
    if (n.id === root) continue;
    const ps = [...(parentsOf.get(n.id) ?? [])].filter((p) => h.nodes.has(p));
    assert.ok(ps.includes(n.parent!), `${n.id}: parent ${n.parent} is not a DAG parent`);
    const maxD = Math.max(...ps.map(depthOf));
    const expected = ps.filter((p) => depthOf(p) === maxD).sort()[0];
    assert.equal(n.parent, expected, `${n.id}: parent`);
    assert.equal(n.depth, depthOf(n.id), `${n.id}: the tree depth is the longest-path depth`);
    if (ps.length > 1) {
      multi++;
      assert.equal(h.dag!.chosenParent[n.id], n.parent);
    }
  }
  // Every class is kept.
  for (const c of classes) assert.ok(h.nodes.has(c));
  assert.ok(multi > 0, 'WordNet has nodes with several parents among the ImageNet-1k ancestors');
  assert.equal(h.dag!.multiParentNodes, multi);
  assert.equal(Object.keys(h.dag!.chosenParent).length, multi);
  assert.ok(h.maxDepth >= 10, `ImageNet-1k classes lie deep in WordNet (maxDepth ${h.maxDepth})`);
  assertAllCutsNest(h, 'WordNet');
});
