import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Hierarchy } from '../src/hierarchy/tree';
import { hierarchicalDistanceAtK, LcaHeights, mistakeSeverity, topK } from '../src/measure/severity';

/** A 2 x 2 x 2 balanced tree: classes g{a}{b}{c} at depth 3. */
function balanced(): Hierarchy {
  const nodes: Array<{ id: string; parent: string | null }> = [];
  const classes: string[] = [];
  for (const a of [0, 1]) {
    nodes.push({ id: `g${a}`, parent: null });
    for (const b of [0, 1]) {
      nodes.push({ id: `g${a}${b}`, parent: `g${a}` });
      for (const c of [0, 1]) {
        nodes.push({ id: `g${a}${b}${c}`, parent: `g${a}${b}` });
        classes.push(`g${a}${b}${c}`);
      }
    }
  }
  return new Hierarchy('root', nodes, classes);
}

/** Unbalanced: X -> {x1, x2}, a class y right under the root, and a class A with a class child B (as WordNet can have). */
function unbalanced(): Hierarchy {
  return new Hierarchy('root', [
    { id: 'X', parent: null }, { id: 'x1', parent: 'X' }, { id: 'x2', parent: 'X' },
    { id: 'y', parent: null }, { id: 'A', parent: null }, { id: 'B', parent: 'A' },
  ], ['x1', 'x2', 'y', 'A', 'B']);
}

/** Reference LCA height by walking parent pointers (independent of LcaHeights' lineage prefixes). */
function refHeight(h: Hierarchy, a: string, b: string): number {
  const up = new Set<string>();
  for (let n: string | null = a; n !== null; n = h.node(n).parent) up.add(n);
  let lca = b;
  while (!up.has(lca)) lca = h.node(lca).parent!;
  return Math.max(h.node(a).depth, h.node(b).depth) - h.node(lca).depth;
}

test('LCA heights: hand values, and every pair of every level of small trees against a parent-walking reference', () => {
  const b = balanced();
  const leaf = new LcaHeights(b, b.leafLevel());
  // g000 vs g001 (siblings) 1, vs g010 2, vs g100 3.
  assert.deepEqual([0, 1, 2, 4].map((j) => leaf.height(0, j)), [0, 1, 2, 3]);
  const u = unbalanced();
  const ul = u.leafLevel();
  const uh = new LcaHeights(u, ul);
  const at = (x: string) => ul.classes.indexOf(x);
  assert.equal(uh.height(at('x1'), at('x2')), 1);
  assert.equal(uh.height(at('x1'), at('y')), 2, 'from the deeper class x1 up to the root');
  assert.equal(uh.height(at('A'), at('B')), 1, 'a class and its class child meet at the parent');
  for (const h of [b, u]) {
    for (const level of h.levels()) {
      const lca = new LcaHeights(h, level);
      const K = level.classes.length;
      for (let i = 0; i < K; i++) {
        for (let j = 0; j < K; j++) {
          const v = lca.height(i, j);
          assert.equal(v, refHeight(h, level.classes[i], level.classes[j]), `${level.name} ${level.classes[i]} ${level.classes[j]}`);
          assert.equal(v, lca.height(j, i), 'symmetric');
          assert.equal(v === 0, i === j, 'zero exactly on the diagonal');
        }
      }
    }
  }
  // A depth cut: g0x / g1x classes at depth 2 meet at height 1 or 2.
  const cut = b.depthCut(2);
  const ch = new LcaHeights(b, cut);
  assert.deepEqual([1, 2, 3].map((j) => ch.height(0, j)), [1, 2, 2]);
  // Balanced trees are ultrametric: h(a, c) <= max(h(a, b), h(b, c)).
  for (let a = 0; a < 8; a++) for (let x = 0; x < 8; x++) for (let c = 0; c < 8; c++) assert.ok(leaf.height(a, c) <= Math.max(leaf.height(a, x), leaf.height(x, c)));
});

test('mistake severity: the mean LCA height over wrong predictions only, for every prediction vector of 3 examples', () => {
  const h = balanced();
  const lca = new LcaHeights(h, h.leafLevel());
  const labels = Int32Array.from([0, 3, 6]);
  for (let code = 0; code < 8 ** 3; code++) {
    const pred = Int32Array.from([code % 8, Math.floor(code / 8) % 8, Math.floor(code / 64)]);
    const wrong = [0, 1, 2].filter((i) => pred[i] !== labels[i]);
    const expected = wrong.length ? wrong.reduce((s, i) => s + refHeight(h, h.classes[pred[i]], h.classes[labels[i]]), 0) / wrong.length : NaN;
    assert.deepEqual(mistakeSeverity(pred, labels, lca), expected, `pred ${[...pred]}`);
  }
  // Hand case: one sibling mistake (1), one across the root (3), one correct: (1 + 3) / 2.
  assert.equal(mistakeSeverity(Int32Array.from([1, 3, 2]), labels, lca), 2);
});

test('hdist@k: mean over examples of the mean LCA height of the top k, for every ranking of 4 classes', () => {
  // Two groups of two: {0, 1} and {2, 3}.
  const h = new Hierarchy('root', [{ id: 'P', parent: null }, { id: 'Q', parent: null }, { id: 'p0', parent: 'P' }, { id: 'p1', parent: 'P' }, { id: 'q0', parent: 'Q' }, { id: 'q1', parent: 'Q' }], ['p0', 'p1', 'q0', 'q1']);
  const lca = new LcaHeights(h, h.leafLevel());
  const perms: number[][] = [];
  const permute = (rest: number[], acc: number[]) => (rest.length ? rest.forEach((r, i) => permute([...rest.slice(0, i), ...rest.slice(i + 1)], [...acc, r])) : perms.push(acc));
  permute([0, 1, 2, 3], []);
  for (const ranking of perms) {
    const probs = new Float32Array(4);
    ranking.forEach((c, r) => (probs[c] = 0.4 - 0.1 * r));
    assert.deepEqual(topK(probs, 4, 0, 2), ranking.slice(0, 2));
    for (const truth of [0, 1, 2, 3]) {
      for (const k of [1, 2, 3, 4, 5]) {
        const top = ranking.slice(0, Math.min(k, 4));
        const expected = top.reduce((s, c) => s + refHeight(h, h.classes[c], h.classes[truth]), 0) / top.length;
        assert.ok(Math.abs(hierarchicalDistanceAtK(probs, 4, Int32Array.of(truth), lca, k) - expected) < 1e-12, `${ranking} truth ${truth} k ${k}`);
      }
    }
  }
  // Over examples: the mean of the per-example means; ties go to the lower index.
  const two = Float32Array.from([0.7, 0.1, 0.1, 0.1, /* */ 0.25, 0.25, 0.25, 0.25]);
  // Row 0, truth 0, top-2 = [0, 1]: (0 + 1) / 2; row 1, truth 3, top-2 = [0, 1]: (2 + 2) / 2.
  assert.equal(hierarchicalDistanceAtK(two, 4, Int32Array.of(0, 3), lca, 2), (0.5 + 2) / 2);
  assert.ok(Number.isNaN(hierarchicalDistanceAtK(new Float32Array(0), 4, new Int32Array(0), lca, 5)));
});
