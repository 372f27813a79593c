import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

/**
 * The threaded wasm build is chosen once per process, so each case runs a
 * small script in a child: start the engine with N threads, report the count
 * the backend really has, and a conv gradient to compare across counts.
 */
function runWith(threads: number): { backend: string; threads: number; grad: number[]; exitMs: number } {
  const engine = path.join(__dirname, '..', 'src', 'engine', 'backend.js');
  const script = `
    const tf = require('@tensorflow/tfjs');
    const { initEngine } = require(${JSON.stringify(engine)});
    initEngine('wasm', ${threads}).then((e) => {
      const g = tf.tidy(() => {
        const x = tf.randomNormal([4, 12, 12, 8], 0, 1, 'float32', 1);
        const w = tf.randomNormal([3, 3, 8, 16], 0, 1, 'float32', 2);
        return tf.grad((k) => tf.conv2d(x, k, 2, 'same').square().sum())(w).dataSync();
      });
      process.stdout.write(JSON.stringify({ backend: e.backend, threads: e.threads, grad: Array.from(g.slice(0, 64)), t: Date.now() }));
    });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `child with ${threads} thread(s) failed or hung: ${r.stderr}`);
  const out = JSON.parse(r.stdout) as { backend: string; threads: number; grad: number[]; t: number };
  return { ...out, exitMs: Date.now() - out.t };
}

test('wasm runs on the requested thread count, exits when done, and computes the same gradient', () => {
  const one = runWith(1);
  const two = runWith(2);
  assert.equal(one.backend, 'wasm');
  assert.equal(one.threads, 1);
  assert.equal(two.backend, 'wasm');
  assert.equal(two.threads, 2, 'the threaded build did not get 2 threads');
  // The pool's workers must not keep the process alive after its last line.
  assert.ok(two.exitMs < 5000, `the 2-thread process took ${two.exitMs} ms to exit after finishing`);
  const worst = Math.max(...one.grad.map((g, i) => Math.abs(g - two.grad[i]) / Math.max(1, Math.abs(g))));
  assert.ok(worst <= 1e-4, `1 vs 2 threads: scaled difference ${worst}`);
});
