import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Decoded, decodeAll, ImageRef } from './decode';
import { sharedFloat32 } from './types';

/** Bump when decoding changes so old cache entries are not reused. */
const CACHE_VERSION = 2;

/**
 * The cache key covers everything that decides the decoded bytes: format, the
 * ordered file list with sizes and modification times, image size, channels.
 */
export function cacheKey(format: string, refs: readonly ImageRef[], size: number, channels: number): string {
  const h = createHash('sha256');
  h.update(`granular-decode-v${CACHE_VERSION}\n${format}\n${size}\n${channels}\n${refs.length}\n`);
  for (const r of refs) h.update(`${r.id}\t${r.stamp}\n`);
  return h.digest('hex').slice(0, 32);
}

/** Decode `refs`, or read them back from `cacheDir` when nothing changed. */
export async function decodeCached(
  format: string,
  refs: readonly ImageRef[],
  size: number,
  channels: 1 | 3,
  cacheDir: string | null,
): Promise<Decoded & { fromCache: boolean }> {
  if (!cacheDir) return { ...(await decodeAll(refs, size, channels)), fromCache: false };
  const key = cacheKey(format, refs, size, channels);
  const bin = path.join(cacheDir, `${format}-${key}.u8`);
  const meta = path.join(cacheDir, `${format}-${key}.json`);
  const expected = refs.length * size * size * channels;
  try {
    const m = JSON.parse(fs.readFileSync(meta, 'utf8')) as { bytes: number; bad: Decoded['bad']; hashes: string[] };
    const buf = fs.readFileSync(bin);
    if (m.bytes === expected && buf.length === expected && m.hashes?.length === refs.length) {
      return { pixels: new Uint8Array(buf.buffer, buf.byteOffset, buf.length), bad: m.bad, hashes: m.hashes, fromCache: true };
    }
  } catch {
    // no usable entry: decode below
  }
  const out = await decodeAll(refs, size, channels);
  try {
    fs.mkdirSync(cacheDir, { recursive: true });
    const tmp = `.tmp-${process.pid}`;
    fs.writeFileSync(bin + tmp, out.pixels);
    fs.writeFileSync(meta + tmp, JSON.stringify({ format, size, channels, count: refs.length, bytes: expected, bad: out.bad, hashes: out.hashes }));
    // Pixels first, then the metadata that vouches for them.
    fs.renameSync(bin + tmp, bin);
    fs.renameSync(meta + tmp, meta);
  } catch (e) {
    process.stderr.write(`granular: warning: could not write the decode cache in '${cacheDir}' (${(e as Error).message}); the next run decodes again.\n`);
  }
  return { ...out, fromCache: false };
}

/** Bytes in [0, 255] to floats in [0, 1]. */
export function toUnitFloats(pixels: Uint8Array, keep: ArrayLike<number>, per: number): Float32Array {
  const out = sharedFloat32(keep.length * per);
  const scale = 1 / 255;
  for (let k = 0; k < keep.length; k++) {
    const src = keep[k] * per;
    const dst = k * per;
    for (let j = 0; j < per; j++) out[dst + j] = pixels[src + j] * scale;
  }
  return out;
}
