import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchSource, BatchSpec, InlineBatches, PrefetchedBatches } from '../src/data/cache/prefetch';
import { FloatStore } from '../src/data/cache/store';
import { sharedFloat32 } from '../src/data/types';
import { Rng } from '../src/util/rng';
import { cli, metricRows, tmpDir } from './helpers';

/** Every batch of a few epochs, copied out (a source's buffers are reused). */
function drain(src: BatchSource, n: number, bs: number, epochs: Array<{ from: number; seed: number }>): Array<{ x: number[]; y: number[] }> {
  const out: Array<{ x: number[]; y: number[] }> = [];
  let step = 0;
  for (const e of epochs) {
    const order = Array.from({ length: n }, (_, i) => i);
    new Rng(e.seed).shuffle(order);
    const index = Int32Array.from(order, (o) => (o * 7) % n);
    const labels = Int32Array.from(order, (o) => o % 5);
    src.epoch(index, labels, e.from, step);
    for (let s = e.from; s < n; s += bs) {
      const { x, y, b } = src.next();
      out.push({ x: Array.from(x.subarray(0, (x.length / bs) * b)), y: Array.from(y.subarray(0, b)) });
      step++;
    }
  }
  return out;
}

test('prefetched batches equal batches made in place: order, labels, augmentation, partial and resumed epochs', () => {
  const n = 45, bs = 8;
  const spec: BatchSpec = { size: 4 * 5 * 2, shape: [4, 5, 2], augment: ['flip', 'crop'], seed: 3 };
  const X = new FloatStore(sharedFloat32(n * spec.size).map((_, i) => Math.sin(i)), spec.shape);
  // Epoch 2 starts mid-way (a resumed epoch); 45 = 5 x 8 + 5 leaves a partial last batch.
  const epochs = [{ from: 0, seed: 1 }, { from: 24, seed: 2 }, { from: 0, seed: 3 }];
  const inline = drain(new InlineBatches(X, spec, bs), n, bs, epochs);
  const pre = new PrefetchedBatches(X, spec, bs);
  try {
    assert.deepEqual(drain(pre, n, bs, epochs), inline);
  } finally {
    pre.close();
  }
  assert.equal(inline.length, 6 + 3 + 6);
  assert.equal(inline[5].y.length, 5);
  // The augmentation did something (otherwise the comparison above proves less).
  const plain = drain(new InlineBatches(X, { ...spec, augment: [] }, bs), n, bs, epochs);
  assert.notDeepEqual(plain.map((b) => b.x), inline.map((b) => b.x));
  assert.deepEqual(plain.map((b) => b.y), inline.map((b) => b.y));
  // Examples outside shared memory are copied once, with the same result.
  const own = new PrefetchedBatches(new FloatStore(Float32Array.from(X.data), spec.shape), spec, bs);
  try {
    assert.deepEqual(drain(own, n, bs, epochs), inline);
  } finally {
    own.close();
  }
});

test('training losses are identical with and without the prefetch worker (augmented)', () => {
  const dir = tmpDir();
  const args = (d: string) => ['pretrain', '--set', 'train.epochs=2', '--set', 'data.synthetic.train_samples=300', '--set', 'data.synthetic.test_samples=50', '--set', 'data.augment=[flip,crop]', '--run-dir', d, '--quiet'];
  const a = cli(args(`${dir}/a`));
  const b = cli(args(`${dir}/b`), { env: { GRANULAR_PREFETCH: '0' } });
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  const losses = (d: string) => metricRows(d).filter((r) => r.kind === 'epoch' && r.epoch !== 0).map((r) => r.train_loss);
  assert.equal(losses(`${dir}/a`).length, 2);
  assert.deepEqual(losses(`${dir}/a`), losses(`${dir}/b`));
});
