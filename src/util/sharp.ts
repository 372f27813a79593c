/**
 * sharp (libvips), loaded on first use: loading its native library takes
 * ~0.1 s, which a run on already-decoded records never needs. Configured
 * once: parallelism comes from decoding several images at once on libuv's
 * pool (UV_THREADPOOL_SIZE threads), since vips' own threads would only
 * contend with them on small images; no operation cache.
 */
import type sharpType from 'sharp';

type Sharp = typeof sharpType;

let lib: Sharp | null = null;

export function loadSharp(): Sharp {
  if (lib === null) {
    lib = require('sharp') as Sharp;
    lib.concurrency(1);
    lib.cache(false);
  }
  return lib;
}
