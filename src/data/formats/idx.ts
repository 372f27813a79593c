import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { UsageError } from '../../util/errors';

/**
 * An IDX array (LeCun's MNIST file format, also Fashion-MNIST's): unsigned
 * bytes with their dimensions, e.g. images [N, 28, 28] or labels [N].
 */
export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

/**
 * Parse an IDX file's bytes (gzip-compressed or not). Layout
 * (yann.lecun.com/exdb/mnist): two zero bytes, a type code (0x08 = unsigned
 * byte, the only type MNIST-style data use), the number of dimensions, each
 * dimension as a big-endian uint32, then the values row-major.
 * Throws a UsageError naming `source` for another type code or a size that
 * does not match the header.
 */
export function parseIdx(bytes: Uint8Array, source: string): IdxArray {
  const buf = bytes[0] === 0x1f && bytes[1] === 0x8b ? zlib.gunzipSync(bytes) : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0) throw new UsageError(`${source}: not an IDX file (it must start with two zero bytes). Give the Fashion-MNIST *-idx?-ubyte(.gz) files.`);
  if (buf[2] !== 0x08) throw new UsageError(`${source}: IDX type code 0x${buf[2].toString(16)} is not unsigned byte (0x08); only byte data is supported.`);
  const n = buf[3];
  if (buf.length < 4 + 4 * n) throw new UsageError(`${source}: truncated IDX header (${n} dimensions announced).`);
  const dims = Array.from({ length: n }, (_, i) => buf.readUInt32BE(4 + 4 * i));
  const count = dims.reduce((a, b) => a * b, 1);
  const start = 4 + 4 * n;
  if (buf.length - start !== count) throw new UsageError(`${source}: the header announces [${dims.join(', ')}] = ${count} values but the file holds ${buf.length - start}. The file is truncated or not IDX.`);
  return { dims, data: new Uint8Array(buf.buffer, buf.byteOffset + start, count) };
}

export function readIdx(file: string): IdxArray {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new UsageError(`cannot read '${file}' (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}).`);
  }
  return parseIdx(bytes, file);
}

/** Encode an IDX array of unsigned bytes (tests and fixtures write them). */
export function encodeIdx(dims: readonly number[], data: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length);
  head[2] = 0x08;
  head[3] = dims.length;
  dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([head, Buffer.from(data)]);
}
