/** The batch prefetch worker (see ./prefetch.ts): fills ring slots in order, each when it is FREE. */
import { parentPort } from 'node:worker_threads';
import { BatchSpec, ERROR_BYTES, fillBatch, FREE, PrefetchMessage, READY } from './prefetch';
import { FloatStore, openStore, PixelStore } from './store';

let X: PixelStore = new FloatStore(new Float32Array(0), [0]);
let spec: BatchSpec;
let bs = 0;
let xs: Float32Array | Int32Array = new Float32Array(0);
let ys: Int32Array = new Int32Array(0);
let status: Int32Array = new Int32Array(0);
let slots = 0;

parentPort!.on('message', (m: PrefetchMessage) => {
  try {
    if (m.kind === 'init') {
      ({ spec, bs, slots } = m);
      X = openStore(m.store);
      xs = spec.codes ? new Int32Array(m.xs) : new Float32Array(m.xs);
      ys = new Int32Array(m.ys);
      status = new Int32Array(m.status);
      return;
    }
    const per = bs * spec.size;
    let slot = m.slot;
    let step = m.step;
    for (let pos = m.from; pos < m.index.length; pos += bs) {
      // Wait until the training thread has handed this slot back.
      while (Atomics.load(status, slot) !== FREE) Atomics.wait(status, slot, Atomics.load(status, slot), 1000);
      const b = Math.min(bs, m.index.length - pos);
      fillBatch(X, spec, m.index, m.labels, pos, b, step, xs.subarray(slot * per, (slot + 1) * per), ys.subarray(slot * bs, (slot + 1) * bs));
      Atomics.store(status, slot, READY);
      Atomics.notify(status, slot);
      slot = (slot + 1) % slots;
      step++;
    }
  } catch (e) {
    // The message first, then the flag that makes the training thread read it.
    const text = new Uint8Array(status.buffer, (slots + 1) * 4, ERROR_BYTES);
    text.fill(0);
    text.set(Buffer.from(String((e as Error).message ?? e)).subarray(0, ERROR_BYTES - 1));
    Atomics.store(status, slots, 1);
    Atomics.notify(status, 0);
    throw e;
  }
});
