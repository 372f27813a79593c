import { test } from 'node:test';
import assert from 'node:assert/strict';
import { convergenceWindow, hasConverged, majorityRate, plateauReached, PLATEAU_TOL } from '../src/measure/convergence';

test('convergence: the last max(3, epochs/10) losses span at most 5 % of the drop over the run', () => {
  assert.deepEqual([1, 3, 29, 30, 39, 40, 100].map(convergenceWindow), [3, 3, 3, 3, 3, 4, 10]);
  assert.equal(PLATEAU_TOL, 0.05);
  // Drop 2 -> 0.48 = 1.52: the window (last 3 epochs) may span up to 0.076.
  assert.equal(hasConverged([2, 1, 0.5, 0.49, 0.48]), true);
  assert.equal(hasConverged([2, 1, 0.56, 0.49, 0.48]), false, 'a span of 0.08 is more than 5 % of the drop');
  assert.equal(hasConverged([2, 1, 0.6, 0.5, 0.49, 0.48]), true, 'only the last 3 epochs count');
  assert.equal(hasConverged([2, 1, 0.5, 0.53, 0.51]), true, 'a rise counts by its size');
  assert.equal(hasConverged([2, 1, 0.5, 0.6, 0.55]), false, 'a rise of 0.1 is a change');
  assert.equal(hasConverged([2, 1.5]), false, 'too short to tell');
  assert.equal(hasConverged([2, 1, NaN, 0.5, 0.5]), false);
  // 40 epochs: window 4; a drop 3 epochs before the end fails it.
  const slow = Array.from({ length: 40 }, (_, e) => (e < 36 ? 3 - e * 0.05 : 1.2));
  assert.equal(hasConverged(slow), true);
  slow[37] = 1.3;
  assert.equal(hasConverged(slow), false);
  // The underfit source: loss still falling steadily at the end.
  assert.equal(hasConverged([3.7, 3.5, 3.3, 3.2, 3.1, 3.0, 2.9, 2.8, 2.7, 2.6, 2.5, 2.4]), false);
  assert.equal(majorityRate(Int32Array.from([0, 1, 1, 2]), 3), 0.5);
});

test('until_converged: stops once the plateau holds over max(patience + 1, window) epochs, never before the run would count as converged', () => {
  const losses = [2, 1, 0.5, 0.495, 0.49, 0.489];
  const firstStop = (p: number) => losses.findIndex((_, i) => plateauReached(losses.slice(0, i + 1), p)) + 1;
  assert.equal(firstStop(2), 5, 'epochs 3-5 span 0.01, below 5 % of the drop 1.51');
  assert.equal(firstStop(3), 6);
  for (let e = 1; e <= losses.length; e++) if (plateauReached(losses.slice(0, e), 1)) assert.ok(hasConverged(losses.slice(0, e)), `epoch ${e}`);
  // 60 epochs so far: the convergence window is 6, so patience 2 looks at the last 5 epochs.
  const long = [...Array.from({ length: 54 }, (_, e) => 5 - e * 0.07), ...new Array(6).fill(1.2)];
  assert.equal(plateauReached(long, 2), true);
  assert.equal(plateauReached(long.slice(0, 56), 2), false);
  assert.equal(hasConverged(long), true);
});
