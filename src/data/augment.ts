import { Rng } from '../util/rng';

/** random_resized_crop is drawn while reading the stored image (./cache/store.ts); the others act here. */
export type AugmentKind = 'flip' | 'crop' | 'random_resized_crop';

/**
 * Light training-only augmentation, in place on a batch of n images
 * (N x H x W x C, values in [0, 1]):
 * - `flip`: mirror left-right with probability 1/2;
 * - `crop`: shift by up to max(1, round(side / 8)) pixels each way, filling
 *   from the nearest edge pixel (a pad-and-crop that needs no background colour).
 * Draws come from `rng` in a fixed order per image (flip, then dy, dx), so a
 * resumed run that restores the generator's state augments identically.
 * Both move whole pixels, so they act alike on floats and on the uint8 codes
 * of a batch decoded on the device (Int32Array).
 */
export function augmentBatch<T extends Float32Array | Int32Array>(x: T, n: number, shape: readonly [number, number, number], kinds: readonly AugmentKind[], rng: Rng): T {
  if (kinds.length === 0 || n === 0) return x;
  const [H, W, C] = shape;
  const per = H * W * C;
  if (x.length < n * per) throw new Error(`augmentBatch: ${x.length} values cannot hold ${n} images of ${H}x${W}x${C}`);
  const flip = kinds.includes('flip');
  const crop = kinds.includes('crop');
  const padY = Math.max(1, Math.round(H / 8));
  const padX = Math.max(1, Math.round(W / 8));
  const src = x instanceof Int32Array ? new Int32Array(per) : new Float32Array(per);
  for (let i = 0; i < n; i++) {
    const mirror = flip && rng.next() < 0.5;
    const dy = crop ? rng.int(2 * padY + 1) - padY : 0;
    const dx = crop ? rng.int(2 * padX + 1) - padX : 0;
    if (!mirror && dy === 0 && dx === 0) continue;
    const img = x.subarray(i * per, (i + 1) * per);
    src.set(img);
    for (let yy = 0; yy < H; yy++) {
      const sy = Math.min(H - 1, Math.max(0, yy + dy));
      for (let xx = 0; xx < W; xx++) {
        const fx = mirror ? W - 1 - xx : xx;
        const sx = Math.min(W - 1, Math.max(0, fx + dx));
        const o = (yy * W + xx) * C;
        const s = (sy * W + sx) * C;
        for (let c = 0; c < C; c++) img[o + c] = src[s + c];
      }
    }
  }
  return x;
}
