/**
 * Where examples' pixels live, and the two ways a network sees them:
 * - the evaluation view: the centre `image_size` square of the stored image
 *   (with stored_size > image_size this is torchvision's Resize(stored) +
 *   CenterCrop(image_size); equal sizes: the stored image itself);
 * - the training view: the same, or with `random_resized_crop` a random area
 *   of the stored image resized to `image_size` (torchvision's
 *   RandomResizedCrop: scale 0.08-1, aspect ratio 3/4-4/3, 10 tries, then the
 *   centre).
 * Values come out in [0, 1]; `normalize` then maps each channel to
 * (v - mean) / std. A store rebuilds itself from its plain-data `spec()` on
 * any thread, which is how the prefetch worker reads the same pixels.
 */
import { Rng } from '../../util/rng';
import { RecordReader, StoreLocation } from './records';

/** Per-channel input normalisation (data.normalize); null = none. */
export type Normalization = { mean: number[]; std: number[] } | null;

/** ImageNet's per-channel statistics (torchvision); one channel takes their average. */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406];
export const IMAGENET_STD = [0.229, 0.224, 0.225];

export type StoreSpec =
  /** Floats already in the network's input shape (synthetic data, frozen-prefix features, corrupted test sets). */
  | { kind: 'floats'; x: Float32Array; shape: number[]; norm: Normalization }
  /** uint8 records of side `stored` in a record store on disk; `rows` maps example -> record. */
  | { kind: 'records'; loc: StoreLocation; rows: Int32Array; shape: [number, number, number]; norm: Normalization }
  /** uint8 records of side `stored` held in memory (a small external OOD folder). */
  | { kind: 'bytes'; data: Uint8Array; stored: number; rows: Int32Array; shape: [number, number, number]; norm: Normalization };

export interface PixelStore {
  /** Examples held. */
  readonly length: number;
  /** Shape of one example as the network sees it ([H, W, C] for images). */
  readonly shape: readonly number[];
  /** Values per example (the product of `shape`). */
  readonly size: number;
  norm: Normalization;
  /**
   * The evaluation view of examples idx[from .. from+n) into `out` (n x size
   * floats), normalised unless `raw` (corruptions act before normalisation).
   */
  read(idx: ArrayLike<number>, from: number, n: number, out: Float32Array, raw?: boolean): void;
  /** The training view, not normalised: random resized crops drawn from `rrc` when given, else the evaluation view. */
  readTrain(idx: ArrayLike<number>, from: number, n: number, out: Float32Array, rrc: Rng | null): void;
  /** Normalise n examples of `out` in place (no-op without a normalisation). */
  normalize(out: Float32Array, n: number): void;
  /**
   * Stores of uint8 pixels only: the evaluation view of examples
   * idx[from .. from+n) as codes `c * 256 + byte` (c the channel) into `out`
   * (n x size), for decoding on the device through codeTable() (./codes).
   */
  readCodes?(idx: ArrayLike<number>, from: number, n: number, out: Int32Array): void;
  /** Plain data (structured-clonable) from which openStore rebuilds this store. */
  spec(): StoreSpec;
  close(): void;
}

/**
 * The value read() gives a stored byte, by code `c * 256 + byte` (c the
 * channel): bytes * 1/255, then normalised, with the very arithmetic of
 * RecordStore.read and normalize, so a gather from this table is
 * bit-identical to reading floats. [256 * C] float32.
 */
export function codeTable(norm: Normalization, C: number): Float32Array {
  const px = new Float32Array(256 * C);
  const scale = 1 / 255;
  for (let v = 0; v < 256; v++) for (let c = 0; c < C; c++) px[v * C + c] = v * scale;
  normalizeInPlace(norm, px, 1, C, 256 * C);
  const table = new Float32Array(256 * C);
  for (let v = 0; v < 256; v++) for (let c = 0; c < C; c++) table[c * 256 + v] = px[v * C + c];
  return table;
}

function normalizeInPlace(norm: Normalization, out: Float32Array, n: number, C: number, size: number): void {
  if (!norm) return;
  const inv = norm.std.map((s) => 1 / s);
  const end = n * size;
  for (let j = 0; j < end; j += C) for (let c = 0; c < C; c++) out[j + c] = (out[j + c] - norm.mean[c]) * inv[c];
}

/**
 * One random-resized-crop box inside a `side` x `side` image, drawn as
 * torchvision's RandomResizedCrop.get_params (scale 0.08-1, log-uniform
 * aspect ratio 3/4-4/3, 10 tries, then the whole image).
 */
export function randomResizedCropBox(side: number, rng: Rng): { top: number; left: number; h: number; w: number } {
  const area = side * side;
  const lo = Math.log(3 / 4);
  const hi = Math.log(4 / 3);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * (0.08 + rng.next() * (1 - 0.08));
    const ratio = Math.exp(lo + rng.next() * (hi - lo));
    const w = Math.round(Math.sqrt(target * ratio));
    const h = Math.round(Math.sqrt(target / ratio));
    if (w > 0 && h > 0 && w <= side && h <= side) return { top: rng.int(side - h + 1), left: rng.int(side - w + 1), h, w };
  }
  return { top: 0, left: 0, h: side, w: side };
}

/**
 * Bilinear resampling (half-pixel centres, edges clamped: PyTorch's
 * align_corners=False) of the box of `src` (a `side`-wide image of C
 * channels, values times `scale`) to H x W, into out[at ..].
 */
export function resizeBox(src: ArrayLike<number>, side: number, C: number, box: { top: number; left: number; h: number; w: number }, H: number, W: number, scale: number, out: Float32Array, at: number): void {
  const sy = box.h / H;
  const sx = box.w / W;
  for (let y = 0; y < H; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), box.h - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, box.h - 1);
    const wy = fy - y0;
    const r0 = (box.top + y0) * side;
    const r1 = (box.top + y1) * side;
    for (let x = 0; x < W; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), box.w - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, box.w - 1);
      const wx = fx - x0;
      const a = (r0 + box.left + x0) * C;
      const b = (r0 + box.left + x1) * C;
      const c0 = (r1 + box.left + x0) * C;
      const d = (r1 + box.left + x1) * C;
      const o = at + (y * W + x) * C;
      for (let c = 0; c < C; c++) {
        const top = src[a + c] + (src[b + c] - src[a + c]) * wx;
        const bottom = src[c0 + c] + (src[d + c] - src[c0 + c]) * wx;
        out[o + c] = (top + (bottom - top) * wy) * scale;
      }
    }
  }
}

/** Examples held as floats in their final shape. */
export class FloatStore implements PixelStore {
  readonly size: number;
  readonly length: number;
  constructor(readonly data: Float32Array, readonly shape: readonly number[], public norm: Normalization = null) {
    this.size = shape.reduce((a, b) => a * b, 1);
    this.length = this.size ? data.length / this.size : 0;
  }
  read(idx: ArrayLike<number>, from: number, n: number, out: Float32Array, raw = false): void {
    const { size, data } = this;
    for (let i = 0; i < n; i++) {
      const j = idx[from + i];
      out.set(data.subarray(j * size, (j + 1) * size), i * size);
    }
    if (!raw) this.normalize(out, n);
  }
  readTrain(idx: ArrayLike<number>, from: number, n: number, out: Float32Array, rrc: Rng | null): void {
    if (!rrc) return this.read(idx, from, n, out, true);
    const [H, W, C] = this.shape;
    if (H !== W) throw new Error('random_resized_crop needs square images');
    for (let i = 0; i < n; i++) {
      const j = idx[from + i];
      resizeBox(this.data.subarray(j * this.size, (j + 1) * this.size), H, C, randomResizedCropBox(H, rrc), H, W, 1, out, i * this.size);
    }
  }
  normalize(out: Float32Array, n: number): void {
    normalizeInPlace(this.norm, out, n, this.shape[this.shape.length - 1], this.size);
  }
  spec(): StoreSpec {
    return { kind: 'floats', x: this.data, shape: [...this.shape], norm: this.norm };
  }
  close(): void {}
}

/** uint8 records of side `stored` (on disk or in memory), seen through a centre crop or a random resized crop. */
export class RecordStore implements PixelStore {
  readonly size: number;
  readonly length: number;
  private readonly stored: number;
  private readonly recordBytes: number;
  private readonly reader: RecordReader | null;
  private readonly scratch: Uint8Array;
  constructor(private readonly source: Extract<StoreSpec, { kind: 'records' | 'bytes' }>) {
    this.stored = source.kind === 'records' ? source.loc.size : source.stored;
    const [H, W, C] = source.shape;
    if (H > this.stored || W > this.stored) throw new Error(`records of side ${this.stored} cannot give ${H}x${W} examples`);
    this.size = H * W * C;
    this.length = source.rows.length;
    this.recordBytes = this.stored * this.stored * C;
    this.reader = source.kind === 'records' ? new RecordReader(source.loc) : null;
    this.scratch = new Uint8Array(this.recordBytes);
  }
  get shape(): [number, number, number] {
    return this.source.shape;
  }
  get norm(): Normalization {
    return this.source.norm;
  }
  set norm(v: Normalization) {
    this.source.norm = v;
  }

  /** The bytes of example j's record. */
  private record(j: number): Uint8Array {
    const r = this.source.rows[j];
    if (this.reader) {
      this.reader.read(r, this.scratch, 0);
      return this.scratch;
    }
    const data = (this.source as Extract<StoreSpec, { kind: 'bytes' }>).data;
    return data.subarray(r * this.recordBytes, (r + 1) * this.recordBytes);
  }

  read(idx: ArrayLike<number>, from: number, n: number, out: Float32Array, raw = false): void {
    const [H, W, C] = this.source.shape;
    const S = this.stored;
    const top = (S - H) >> 1;
    const left = (S - W) >> 1;
    const scale = 1 / 255;
    for (let i = 0; i < n; i++) {
      const px = this.record(idx[from + i]);
      let o = i * this.size;
      for (let y = 0; y < H; y++) {
        const s0 = ((top + y) * S + left) * C;
        const s1 = s0 + W * C;
        for (let s = s0; s < s1; s++) out[o++] = px[s] * scale;
      }
    }
    if (!raw) this.normalize(out, n);
  }

  readCodes(idx: ArrayLike<number>, from: number, n: number, out: Int32Array): void {
    const [H, W, C] = this.source.shape;
    const S = this.stored;
    const top = (S - H) >> 1;
    const left = (S - W) >> 1;
    for (let i = 0; i < n; i++) {
      const px = this.record(idx[from + i]);
      let o = i * this.size;
      for (let y = 0; y < H; y++) {
        const s0 = ((top + y) * S + left) * C;
        for (let x = 0; x < W * C; x += C) for (let c = 0; c < C; c++) out[o++] = c * 256 + px[s0 + x + c];
      }
    }
  }

  readTrain(idx: ArrayLike<number>, from: number, n: number, out: Float32Array, rrc: Rng | null): void {
    if (!rrc) return this.read(idx, from, n, out, true);
    const [H, W, C] = this.source.shape;
    for (let i = 0; i < n; i++) {
      const px = this.record(idx[from + i]);
      resizeBox(px, this.stored, C, randomResizedCropBox(this.stored, rrc), H, W, 1 / 255, out, i * this.size);
    }
  }

  normalize(out: Float32Array, n: number): void {
    normalizeInPlace(this.source.norm, out, n, this.source.shape[2], this.size);
  }

  spec(): StoreSpec {
    return this.source;
  }

  close(): void {
    this.reader?.close();
  }
}

export function openStore(spec: StoreSpec): PixelStore {
  return spec.kind === 'floats' ? new FloatStore(spec.x, spec.shape, spec.norm) : new RecordStore(spec);
}

/** Every example of `store` in its evaluation view (tests and small sets only: this is the whole set in memory). */
export function readAll(store: PixelStore, raw = false): Float32Array {
  const out = new Float32Array(store.length * store.size);
  const idx = Int32Array.from({ length: store.length }, (_, i) => i);
  store.read(idx, 0, store.length, out, raw);
  return out;
}

/** Examples `idx` of `store` in their evaluation view, as one float array (raw: in [0, 1], not normalised). */
export function gatherFloats(store: PixelStore, idx: ArrayLike<number>, raw = true): Float32Array {
  const out = new Float32Array(idx.length * store.size);
  store.read(idx, 0, idx.length, out, raw);
  return out;
}
