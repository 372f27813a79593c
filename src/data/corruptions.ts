import sharp from 'sharp';
import { Rng } from '../util/rng';

/**
 * Image corruptions for the OOD test (DESIGN.md "OOD"): they act on pixels in
 * [0, 1] before any normalisation, on N x H x W x C arrays with 1 or 3
 * channels, at severities 1-5 (0 = identity). Parameters follow the CIFAR-10-C
 * choices (Hendrycks & Dietterich 2019) for 32-pixel images; spatial ones scale
 * with the image side. Random ones draw from a seeded generator.
 */
export const CORRUPTIONS = ['gaussian_noise', 'gaussian_blur', 'contrast', 'brightness', 'jpeg', 'pixelate'] as const;
export type Corruption = (typeof CORRUPTIONS)[number];

const clip = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);

/** x' = clip(x + sigma z), z ~ N(0, 1), sigma = 0.04, 0.06, 0.08, 0.09, 0.10. */
function gaussianNoise(x: Float32Array, s: number, rng: Rng): Float32Array {
  const sigma = [0.04, 0.06, 0.08, 0.09, 0.1][s - 1];
  return x.map((v) => clip(v + sigma * rng.normal()));
}

/** Separable Gaussian blur, sigma = (0.4, 0.6, 0.7, 0.8, 1.0) x side / 32 pixels, borders reflected. */
function gaussianBlur(x: Float32Array, n: number, H: number, W: number, C: number, s: number): Float32Array {
  const sigma = ([0.4, 0.6, 0.7, 0.8, 1.0][s - 1] * Math.max(H, W)) / 32;
  const r = Math.max(1, Math.ceil(3 * sigma));
  const k = Array.from({ length: 2 * r + 1 }, (_, i) => Math.exp(-((i - r) ** 2) / (2 * sigma * sigma)));
  const sum = k.reduce((a, b) => a + b, 0);
  const w = k.map((v) => v / sum);
  const reflect = (i: number, m: number) => (i < 0 ? Math.min(-i, m - 1) : i >= m ? Math.max(2 * m - i - 2, 0) : i);
  const tmp = new Float32Array(x.length);
  const out = new Float32Array(x.length);
  for (let b = 0; b < n; b++) {
    const o = b * H * W * C;
    for (let y = 0; y < H; y++)
      for (let xx = 0; xx < W; xx++)
        for (let c = 0; c < C; c++) {
          let acc = 0;
          for (let d = -r; d <= r; d++) acc += w[d + r] * x[o + (y * W + reflect(xx + d, W)) * C + c];
          tmp[o + (y * W + xx) * C + c] = acc;
        }
    for (let y = 0; y < H; y++)
      for (let xx = 0; xx < W; xx++)
        for (let c = 0; c < C; c++) {
          let acc = 0;
          for (let d = -r; d <= r; d++) acc += w[d + r] * tmp[o + (reflect(y + d, H) * W + xx) * C + c];
          out[o + (y * W + xx) * C + c] = acc;
        }
  }
  return out;
}

/** x' = (x - mean) c + mean, per image and channel, c = 0.75, 0.5, 0.4, 0.3, 0.15. */
function contrast(x: Float32Array, n: number, HW: number, C: number, s: number): Float32Array {
  const c = [0.75, 0.5, 0.4, 0.3, 0.15][s - 1];
  const out = new Float32Array(x.length);
  for (let b = 0; b < n; b++) {
    for (let ch = 0; ch < C; ch++) {
      let mean = 0;
      for (let p = 0; p < HW; p++) mean += x[(b * HW + p) * C + ch];
      mean /= HW;
      for (let p = 0; p < HW; p++) {
        const i = (b * HW + p) * C + ch;
        out[i] = (x[i] - mean) * c + mean;
      }
    }
  }
  return out;
}

/** x' = clip(x + delta), delta = 0.1 ... 0.5: the value (V) shift of CIFAR-10-C applied to every channel. */
function brightness(x: Float32Array, s: number): Float32Array {
  const delta = [0.1, 0.2, 0.3, 0.4, 0.5][s - 1];
  return x.map((v) => clip(v + delta));
}

/** Average-pool down to round(side x f), then nearest-neighbour back up; f = 0.95, 0.9, 0.85, 0.75, 0.65. */
function pixelate(x: Float32Array, n: number, H: number, W: number, C: number, s: number): Float32Array {
  const f = [0.95, 0.9, 0.85, 0.75, 0.65][s - 1];
  const h = Math.max(1, Math.round(H * f));
  const w = Math.max(1, Math.round(W * f));
  const out = new Float32Array(x.length);
  const small = new Float32Array(h * w * C);
  for (let b = 0; b < n; b++) {
    const o = b * H * W * C;
    small.fill(0);
    const cnt = new Float32Array(h * w);
    for (let y = 0; y < H; y++)
      for (let xx = 0; xx < W; xx++) {
        const sy = Math.min(h - 1, Math.floor((y * h) / H));
        const sx = Math.min(w - 1, Math.floor((xx * w) / W));
        cnt[sy * w + sx]++;
        for (let c = 0; c < C; c++) small[(sy * w + sx) * C + c] += x[o + (y * W + xx) * C + c];
      }
    for (let i = 0; i < h * w; i++) for (let c = 0; c < C; c++) small[i * C + c] /= cnt[i] || 1;
    for (let y = 0; y < H; y++)
      for (let xx = 0; xx < W; xx++) {
        const sy = Math.min(h - 1, Math.floor((y * h) / H));
        const sx = Math.min(w - 1, Math.floor((xx * w) / W));
        for (let c = 0; c < C; c++) out[o + (y * W + xx) * C + c] = small[(sy * w + sx) * C + c];
      }
  }
  return out;
}

/** JPEG round trip through sharp at quality 80, 65, 58, 50, 40. */
async function jpeg(x: Float32Array, n: number, H: number, W: number, C: number, s: number): Promise<Float32Array> {
  const quality = [80, 65, 58, 50, 40][s - 1];
  const out = new Float32Array(x.length);
  const size = H * W * C;
  for (let b = 0; b < n; b++) {
    const px = Buffer.from(Uint8Array.from(x.subarray(b * size, (b + 1) * size), (v) => Math.round(clip(v) * 255)));
    const enc = await sharp(px, { raw: { width: W, height: H, channels: C as 1 | 3 } }).jpeg({ quality }).toBuffer();
    let img = sharp(enc);
    img = C === 1 ? img.toColourspace('b-w') : img.removeAlpha();
    const dec = await img.raw().toBuffer();
    const got = dec.length / (H * W);
    for (let p = 0; p < H * W; p++) for (let c = 0; c < C; c++) out[b * size + p * C + c] = dec[p * got + Math.min(c, got - 1)] / 255;
  }
  return out;
}

/** Apply one corruption at one severity to N images; severity 0 returns a copy. */
export async function corrupt(x: Float32Array, shape: [number, number, number], kind: Corruption, severity: number, seed: number): Promise<Float32Array> {
  const [H, W, C] = shape;
  const n = x.length / (H * W * C);
  if (severity === 0) return x.slice();
  if (severity < 0 || severity > 5 || !Number.isInteger(severity)) throw new Error(`severity must be 0..5, got ${severity}`);
  const rng = new Rng(seed, 600 + CORRUPTIONS.indexOf(kind) * 10 + severity);
  switch (kind) {
    case 'gaussian_noise':
      return gaussianNoise(x, severity, rng);
    case 'gaussian_blur':
      return gaussianBlur(x, n, H, W, C, severity);
    case 'contrast':
      return contrast(x, n, H * W, C, severity);
    case 'brightness':
      return brightness(x, severity);
    case 'jpeg':
      return jpeg(x, n, H, W, C, severity);
    case 'pixelate':
      return pixelate(x, n, H, W, C, severity);
  }
}
