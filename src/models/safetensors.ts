import * as fs from 'node:fs';
import { UsageError } from '../util/errors';

/**
 * The safetensors format (huggingface/safetensors, README "Format"): an
 * 8-byte little-endian unsigned header length N, N bytes of UTF-8 JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {k: v}}`
 * (offsets into the byte buffer after the header, which the tensors cover
 * contiguously without overlap), then the raw little-endian row-major tensors.
 * No npm package for it is kept by its authors; the format is small enough to
 * read and write here, with the checks the reference implementation makes.
 */

/** A tensor as read: floating dtypes widened to float32, integers as numbers (int64 via BigInt). */
export interface SafeTensor {
  dtype: string;
  shape: number[];
  data: Float32Array | Int32Array | BigInt64Array | Uint8Array;
}

const BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
/** The reference implementation's limit on the header (100 MB). */
const MAX_HEADER = 100_000_000;

function f16(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/**
 * Every tensor of a safetensors file, by name, and its `__metadata__`.
 * F32/F64/F16/BF16 are returned as float32, I64 as BigInt64Array, I32 as
 * Int32Array, U8/BOOL as Uint8Array. Throws UsageError naming the file for a
 * file that is not safetensors (short, header past the end, bad JSON, an
 * unknown dtype, offsets that do not match the shape or leave gaps).
 */
export function readSafetensors(file: string): { tensors: Map<string, SafeTensor>; metadata: Record<string, string> } {
  const buf = fs.readFileSync(file);
  const bad = (why: string) => new UsageError(`'${file}' is not a valid safetensors file: ${why}. Save the state dict with safetensors.torch.save_file (or a writer of the same format).`);
  if (buf.byteLength < 8) throw bad(`${buf.byteLength} bytes, shorter than the 8-byte header length`);
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(Math.min(MAX_HEADER, buf.byteLength - 8))) throw bad(`header length ${n} runs past the end of the file (${buf.byteLength} bytes) or the 100 MB limit`);
  const headerEnd = 8 + Number(n);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(buf.subarray(8, headerEnd).toString('utf8'));
  } catch (e) {
    throw bad(`its header is not JSON (${(e as Error).message})`);
  }
  if (!header || typeof header !== 'object' || Array.isArray(header)) throw bad('its header is not a JSON object');
  const body = buf.subarray(headerEnd);
  const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
  const entries: Array<[string, { dtype: string; shape: number[]; data_offsets: [number, number] }]> = [];
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const t = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof t.dtype !== 'string' || !(t.dtype in BYTES)) throw bad(`tensor '${name}' has dtype ${JSON.stringify(t.dtype)}; known: ${Object.keys(BYTES).join(', ')}`);
    if (!Array.isArray(t.shape) || t.shape.some((d) => !Number.isInteger(d) || d < 0)) throw bad(`tensor '${name}' has shape ${JSON.stringify(t.shape)}`);
    const o = t.data_offsets;
    if (!Array.isArray(o) || o.length !== 2 || !o.every((x) => Number.isInteger(x) && x >= 0) || o[1] < o[0] || o[1] > body.byteLength) {
      throw bad(`tensor '${name}' has data_offsets ${JSON.stringify(o)} outside the ${body.byteLength}-byte buffer`);
    }
    const want = (t.shape as number[]).reduce((a, b) => a * b, 1) * BYTES[t.dtype];
    if (o[1] - o[0] !== want) throw bad(`tensor '${name}' (${t.dtype} ${JSON.stringify(t.shape)}) needs ${want} bytes, its offsets span ${o[1] - o[0]}`);
    entries.push([name, { dtype: t.dtype, shape: t.shape as number[], data_offsets: o as [number, number] }]);
  }
  // Contiguous and non-overlapping, as the reference implementation requires.
  const spans = entries.map(([, t]) => t.data_offsets).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let end = 0;
  for (const [b, e] of spans) {
    if (b !== end) throw bad(`tensor data ${b < end ? 'overlaps' : 'leaves a gap'} at byte ${Math.min(b, end)}`);
    end = e;
  }
  if (end !== body.byteLength) throw bad(`${body.byteLength - end} bytes after the last tensor`);
  const tensors = new Map<string, SafeTensor>();
  for (const [name, t] of entries) {
    const raw = body.subarray(t.data_offsets[0], t.data_offsets[1]);
    const count = raw.byteLength / BYTES[t.dtype];
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    let data: SafeTensor['data'];
    switch (t.dtype) {
      case 'F32':
        data = new Float32Array(count);
        for (let i = 0; i < count; i++) data[i] = dv.getFloat32(4 * i, true);
        break;
      case 'F64':
        data = new Float32Array(count);
        for (let i = 0; i < count; i++) data[i] = dv.getFloat64(8 * i, true);
        break;
      case 'F16':
        data = new Float32Array(count);
        for (let i = 0; i < count; i++) data[i] = f16(dv.getUint16(2 * i, true));
        break;
      case 'BF16': {
        data = new Float32Array(count);
        const u = new Uint32Array(data.buffer);
        for (let i = 0; i < count; i++) u[i] = dv.getUint16(2 * i, true) << 16;
        break;
      }
      case 'I64':
        data = new BigInt64Array(count);
        for (let i = 0; i < count; i++) data[i] = dv.getBigInt64(8 * i, true);
        break;
      case 'I32':
      case 'I16':
      case 'I8':
        data = new Int32Array(count);
        for (let i = 0; i < count; i++) data[i] = t.dtype === 'I32' ? dv.getInt32(4 * i, true) : t.dtype === 'I16' ? dv.getInt16(2 * i, true) : dv.getInt8(i);
        break;
      default:
        data = new Uint8Array(raw);
    }
    tensors.set(name, { dtype: t.dtype, shape: t.shape, data });
  }
  return { tensors, metadata };
}

/**
 * The bytes of a safetensors file holding `tensors` (float32 as F32, int64 as
 * I64) in the given order, with `metadata` (string values) as `__metadata__`.
 * The header is padded with spaces to a multiple of 8 bytes, as the reference
 * writer does, so every tensor starts aligned.
 */
export function encodeSafetensors(tensors: ReadonlyArray<{ name: string; shape: number[]; data: Float32Array | BigInt64Array }>, metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    const n = t.data.byteLength;
    header[t.name] = { dtype: t.data instanceof Float32Array ? 'F32' : 'I64', shape: t.shape, data_offsets: [off, off + n] };
    off += n;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.byteLength % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const out = Buffer.alloc(8 + json.byteLength + off);
  out.writeBigUInt64LE(BigInt(json.byteLength), 0);
  json.copy(out, 8);
  let at = 8 + json.byteLength;
  for (const t of tensors) {
    const dv = new DataView(out.buffer, out.byteOffset + at, t.data.byteLength);
    if (t.data instanceof Float32Array) for (let i = 0; i < t.data.length; i++) dv.setFloat32(4 * i, t.data[i], true);
    else for (let i = 0; i < t.data.length; i++) dv.setBigInt64(8 * i, t.data[i], true);
    at += t.data.byteLength;
  }
  return out;
}
