import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { decodeNetpbm, isNetpbm } from './netpbm';

/** Content hash of an image file: the first 16 hex digits of its SHA-1 (8 bytes). */
export function contentHash(buf: Buffer): string {
  return createHash('sha1').update(buf).digest('hex').slice(0, 16);
}

// Parallelism comes from decoding several images at once on libuv's pool
// (UV_THREADPOOL_SIZE threads); vips' own threads would only contend with
// them on small images.
sharp.concurrency(1);
sharp.cache(false);

/**
 * Decode one image file to `size` x `size` x `channels` bytes (row-major HWC),
 * as a viewer shows it and as torchvision's Resize(size) + CenterCrop(size)
 * frames it:
 * 1. EXIF orientation applied first (a phone photo stored sideways is turned
 *    upright before anything else looks at its pixels);
 * 2. alpha flattened onto white; grey, palette, CMYK and 16-bit inputs become
 *    8-bit sRGB (or grey for 1 channel);
 * 3. the shorter side resized to `size` keeping the aspect ratio (libvips'
 *    Lanczos-3 with shrink-on-load), then the centre `size` x `size` cut out.
 * Netpbm files (no EXIF) go through ./netpbm.ts, since sharp reads them only
 * from files. Throws on undecodable or truncated input.
 */
export async function decodeImage(buf: Buffer, size: number, channels: 1 | 3): Promise<Buffer> {
  let img: ReturnType<typeof sharp>;
  if (isNetpbm(buf)) {
    const r = decodeNetpbm(buf);
    img = sharp(r.data, { raw: { width: r.width, height: r.height, channels: r.channels } });
  } else {
    img = sharp(buf, { failOn: 'truncated', autoOrient: true }).flatten({ background: '#ffffff' });
  }
  img = channels === 1 ? img.grayscale() : img.toColourspace('srgb');
  const { data, info } = await img
    .resize(size, size, { fit: 'cover', position: 'centre' })
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== channels || data.length !== size * size * channels) {
    throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}, expected ${size}x${size}x${channels}`);
  }
  return data;
}

/** Something that yields one image file's bytes. */
export interface ImageBytes {
  read(): Buffer | Promise<Buffer>;
}

export interface Decoded {
  /** N x size x size x channels bytes, 0 for images that failed. */
  pixels: Uint8Array;
  /** Indices of images that could not be decoded, with the reason. */
  bad: Array<{ index: number; reason: string }>;
  /** A digest of each file's bytes (contentHash). */
  hashes: string[];
}

/**
 * Run `work(i)` for i in [0, n) with at most `parallel` in flight, in index
 * order of starting (completion order is free).
 */
export async function forEachParallel(n: number, parallel: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) await work(next++);
  };
  await Promise.all(Array.from({ length: Math.min(parallel, n) }, worker));
}

/** Default images in flight: enough to keep libuv's pool busy. */
export const DECODE_PARALLEL = Math.max(8, 2 * Number(process.env.UV_THREADPOOL_SIZE ?? 4));

/**
 * Decode a few images into memory (an external OOD folder, tests); datasets go
 * through the record cache (../cache/records.ts) instead. Failures are collected, never thrown.
 */
export async function decodeAll(items: readonly ImageBytes[], size: number, channels: 1 | 3, parallel = DECODE_PARALLEL): Promise<Decoded> {
  const per = size * size * channels;
  const pixels = new Uint8Array(items.length * per);
  const bad: Decoded['bad'] = [];
  const hashes: string[] = new Array(items.length).fill('');
  await forEachParallel(items.length, parallel, async (i) => {
    try {
      const buf = await items[i].read();
      hashes[i] = contentHash(buf);
      pixels.set(await decodeImage(buf, size, channels), i * per);
    } catch (e) {
      bad.push({ index: i, reason: (e as Error).message.split('\n')[0] });
    }
  });
  bad.sort((a, b) => a.index - b.index);
  return { pixels, bad, hashes };
}
