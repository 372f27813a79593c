import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { decodeNetpbm, isNetpbm } from './netpbm';

/** One image to decode: where its bytes come from, and what identifies its version for the cache. */
export interface ImageRef {
  /** Stable example id (relative path or archive entry). */
  id: string;
  /** Dataset class index (into Hierarchy.classes). */
  cls: number;
  /** Size and modification time (or archive stamp): a change invalidates the cache. */
  stamp: string;
  read(): Buffer | Promise<Buffer>;
}

export interface Decoded {
  /** N x size x size x channels bytes, 0 for images that failed. */
  pixels: Uint8Array;
  /** Indices (into the refs) of images that could not be decoded, with the reason. */
  bad: Array<{ index: number; reason: string }>;
  /** A digest of each file's bytes (the overlap check between datasets compares them). */
  hashes: string[];
}

/** Content hash of an image file: the first 16 hex digits of its SHA-1. */
export function contentHash(buf: Buffer): string {
  return createHash('sha1').update(buf).digest('hex').slice(0, 16);
}

// Parallelism comes from decoding several images at once on libuv's pool;
// vips' own threads would only contend with them on small images.
sharp.concurrency(1);
sharp.cache(false);

/** Decode one image to `size` x `size` x `channels` bytes (alpha flattened onto white). */
export async function decodeImage(buf: Buffer, size: number, channels: 1 | 3): Promise<Buffer> {
  let img: ReturnType<typeof sharp>;
  if (isNetpbm(buf)) {
    const r = decodeNetpbm(buf);
    img = sharp(r.data, { raw: { width: r.width, height: r.height, channels: r.channels } });
  } else {
    img = sharp(buf, { failOn: 'truncated' }).flatten({ background: '#ffffff' });
  }
  img = channels === 1 ? img.grayscale() : img.toColourspace('srgb');
  const { data, info } = await img
    .resize(size, size, { fit: 'fill' })
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== channels || data.length !== size * size * channels) {
    throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}, expected ${size}x${size}x${channels}`);
  }
  return data;
}

/** Decode every ref with a few images in flight; failures are collected, never thrown. */
export async function decodeAll(refs: readonly ImageRef[], size: number, channels: 1 | 3, parallel = 8): Promise<Decoded> {
  const per = size * size * channels;
  const pixels = new Uint8Array(refs.length * per);
  const bad: Decoded['bad'] = [];
  const hashes: string[] = new Array(refs.length).fill('');
  let next = 0;
  const worker = async () => {
    while (next < refs.length) {
      const i = next++;
      try {
        const buf = await refs[i].read();
        hashes[i] = contentHash(buf);
        const out = await decodeImage(buf, size, channels);
        pixels.set(out, i * per);
      } catch (e) {
        bad.push({ index: i, reason: (e as Error).message.split('\n')[0] });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, refs.length) }, worker));
  bad.sort((a, b) => a.index - b.index);
  return { pixels, bad, hashes };
}
