/**
 * The `native` tfjs backend: tensors in ordinary memory, the hot kernels in
 * native code (./native-kernels, native/onednn.cc), the rest tfjs's
 * pure-JavaScript cpu kernels.
 *
 * Why: the wasm backend keeps every tensor inside one wasm32 heap, at most
 * 4 GiB, which a ResNet at 128 px and batch 32 already overflows. Here a
 * tensor's data is a typed array of its own (tfjs's cpu backend storage, which
 * this class extends), which the addon reads and writes in place.
 *
 * Memory: tfjs frees a tensor's data by dropping the reference, and V8 frees
 * the ArrayBuffer at some later garbage collection; with tensors of 100 MB
 * that lag alone doubled the peak. This backend counts the tensors that hold
 * each buffer and, when none does, keeps it in a pool for the next output of
 * the same size and type (a training step asks for the same sizes every
 * step, so after the first step almost nothing is allocated; fresh pages cost
 * a page fault each). An output of 1 MiB and up whose size the pool lacks may
 * take a pooled buffer up to twice as long, as a view of its start; the whole
 * buffer returns to the pool with it. Fresh buffers of 4 MiB and up are
 * advised to use transparent huge pages. The pool never holds more than the high-water mark of
 * live tensor memory allows (live + pooled <= peak live + 64 MiB); beyond
 * that the oldest buffers are detached, which frees them at once.
 *
 * Semantics kept from the wasm backend, unlike tfjs's cpu backend: a tensor
 * made from an array copies it (so a caller may reuse its buffer), and
 * dataSync()/data() return copies (so a result may outlive its tensor).
 */
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { OutOfMemoryError } from './oom';
import type { OneDnnAddon } from './native-kernels';

export const NATIVE_BACKEND = 'native';

type TypedArray = Float32Array | Int32Array | Uint8Array;
type TypedArrayCtor = Float32ArrayConstructor | Int32ArrayConstructor | Uint8ArrayConstructor;
type DataId = object;

const MiB = 2 ** 20;
/** Pool slack above the live high-water mark. */
const POOL_SLACK = 64 * MiB;
/** Fresh allocations from this size up are checked against the memory the system has left. */
const CHECKED_ALLOCATION = 1 * MiB;
/**
 * Fresh allocations from this size up get transparent huge pages (addon
 * adviseHugePages): 2 MiB pages fault in ~19x faster than 4 KiB ones on the
 * VM measured, which is most of a first evaluation pass or training step.
 */
const HUGE_PAGE_ALLOCATION = 4 * MiB;
/**
 * From this size up, an output may reuse a pooled buffer up to LOOSE_FIT
 * times longer when none of its exact size is free (a last partial batch, a
 * smaller evaluation batch): pooled pages are already mapped, fresh ones cost
 * a page fault each.
 */
const LOOSE_FIT_ALLOCATION = 1 * MiB;
const LOOSE_FIT = 2;
/** Kept free for everything else (the JavaScript heap, oneDNN's scratchpads, the OS). */
const RESERVE = 256 * MiB;

function isTypedArray(v: unknown): v is TypedArray {
  return ArrayBuffer.isView(v) && !(v instanceof DataView);
}

/** The environment variable that caps the native backend's tensor memory (live + pooled), e.g. `GRANULAR_MEMORY_LIMIT=8G`. */
export const MEMORY_LIMIT_ENV = 'GRANULAR_MEMORY_LIMIT';

/**
 * GRANULAR_MEMORY_LIMIT in bytes (a number with an optional K, M, G or T
 * suffix, powers of 1024), or null when unset. Throws on anything else.
 */
export function memoryLimit(value = process.env[MEMORY_LIMIT_ENV]): number | null {
  if (value === undefined || value.trim() === '') return null;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$/i.exec(value);
  if (!m) throw new Error(`${MEMORY_LIMIT_ENV}='${value}' is not a size; use bytes or a number with K, M, G or T (e.g. 8G).`);
  return Math.floor(Number(m[1]) * 1024 ** ' KMGT'.indexOf(m[2].toUpperCase() || ' '));
}

/** Bytes the system can still give this process: MemAvailable, or the cgroup limit minus what we hold. */
export function availableMemory(): number {
  let free = os.freemem();
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  if (constrained && constrained > 0 && constrained < os.totalmem()) free = Math.min(free, constrained - process.memoryUsage.rss());
  return free;
}

/**
 * Buffers no tensor holds, by type and length, oldest first for eviction.
 * Keeps live + pooled bytes <= the live high-water mark + `slack`.
 */
export class BufferPool {
  private readonly byKey = new Map<string, TypedArray[]>();
  private readonly order = new Set<TypedArray>();
  freeBytes = 0;
  liveBytes = 0;
  peakLiveBytes = 0;

  constructor(
    private readonly release: (a: TypedArray) => void,
    private readonly slack = POOL_SLACK,
  ) {}

  private static key(ctor: TypedArrayCtor, length: number): string {
    return `${ctor.name}:${length}`;
  }

  /**
   * A pooled buffer of exactly `length` elements or, failing that and with
   * `fit` > 1, the shortest one of up to `fit` x `length` (the caller views
   * its first `length` elements); null when there is none.
   */
  take(ctor: TypedArrayCtor, length: number, fit = 1): TypedArray | null {
    let key = BufferPool.key(ctor, length);
    let list = this.byKey.get(key);
    if (!list && fit > 1) {
      let best = Infinity;
      for (const [k, l] of this.byKey) {
        const n = l[0].length;
        if (l[0].constructor === ctor && n > length && n <= fit * length && n < best) {
          best = n;
          key = k;
          list = l;
        }
      }
    }
    const a = list?.pop();
    if (!a) return null;
    // Only sizes with a free buffer stay listed (so the loose-fit search scans just those).
    if (!list!.length) this.byKey.delete(key);
    this.order.delete(a);
    this.freeBytes -= a.byteLength;
    return a;
  }

  put(a: TypedArray): void {
    const key = BufferPool.key(a.constructor as TypedArrayCtor, a.length);
    let list = this.byKey.get(key);
    if (!list) this.byKey.set(key, (list = []));
    list.push(a);
    this.order.add(a);
    this.freeBytes += a.byteLength;
    this.trim(this.peakLiveBytes + this.slack);
  }

  /** Frees the oldest pooled buffers until live + pooled <= `limit`. */
  trim(limit: number): void {
    for (const a of this.order) {
      if (this.liveBytes + this.freeBytes <= limit) break;
      this.order.delete(a);
      const key = BufferPool.key(a.constructor as TypedArrayCtor, a.length);
      const list = this.byKey.get(key)!;
      list.splice(list.indexOf(a), 1);
      if (!list.length) this.byKey.delete(key);
      this.freeBytes -= a.byteLength;
      this.release(a);
    }
  }

  grew(bytes: number): void {
    this.liveBytes += bytes;
    if (this.liveBytes > this.peakLiveBytes) this.peakLiveBytes = this.liveBytes;
  }
}

interface Holding {
  count: number;
  /** A view of the whole buffer, which the pool can hand out again, or null. */
  whole: TypedArray | null;
}

export class NativeBackend extends MathBackendCPU {
  readonly pool: BufferPool;
  private readonly holdings = new Map<ArrayBufferLike, Holding>();
  /** Pooled buffers handed out as a view of their start (allocate), by buffer, until a tensor holds them. */
  private readonly wholeOf = new WeakMap<ArrayBufferLike, TypedArray>();
  private readonly limit = memoryLimit();

  constructor(private readonly addon: OneDnnAddon) {
    super();
    // MathBackendCPU prints a banner on its first write in Node, urging tfjs-node.
    (this as unknown as { firstUse: boolean }).firstUse = false;
    this.pool = new BufferPool((a) => addon.release(a));
  }

  /** The typed array behind a tensor (no copy). */
  values(t: tf.TensorInfo): TypedArray {
    return this.data.get(t.dataId).values as TypedArray;
  }

  /**
   * A typed array of `length` elements for a tensor of `shape`: a pooled one
   * (contents arbitrary: callers overwrite every element) or a fresh one.
   * Throws OutOfMemoryError when the system cannot hold it.
   */
  allocate(ctor: TypedArrayCtor, length: number, shape: number[], dtype: string): TypedArray {
    const bytes = length * ctor.BYTES_PER_ELEMENT;
    const pooled = this.pool.take(ctor, length, bytes >= LOOSE_FIT_ALLOCATION ? LOOSE_FIT : 1);
    if (pooled) {
      if (pooled.length === length) return pooled;
      // A longer buffer: the tensor gets a view of its start; the whole buffer returns to the pool with it.
      const view = pooled.subarray(0, length);
      this.wholeOf.set(pooled.buffer, pooled);
      return view;
    }
    if (bytes >= CHECKED_ALLOCATION || this.limit !== null) {
      let room = this.room(bytes);
      if (room.bytes < bytes) {
        // Pooled buffers of other sizes are memory we can give back first.
        this.pool.trim(this.pool.liveBytes);
        room = this.room(bytes);
        if (room.bytes < bytes) throw new OutOfMemoryError({ cause: room.why, bytes, shape, dtype, available: Math.max(0, room.bytes) });
      }
    }
    let fresh: TypedArray;
    try {
      fresh = new ctor(length);
    } catch (e) {
      throw new OutOfMemoryError({ cause: (e as Error).message, bytes, shape, dtype });
    }
    // Usually untouched yet (fresh calloc'd pages are mapped on first write): ask for huge pages now.
    // Memory malloc reuses is already mapped, and the advice then changes nothing.
    if (bytes >= HUGE_PAGE_ALLOCATION) this.addon.adviseHugePages(fresh);
    return fresh;
  }

  /** How many bytes may still be allocated, and what limits them. */
  private room(bytes: number): { bytes: number; why: string } {
    const held = this.pool.liveBytes + this.pool.freeBytes;
    const capped = this.limit !== null ? this.limit - held : Infinity;
    const system = bytes >= CHECKED_ALLOCATION ? availableMemory() - RESERVE : Infinity;
    return capped <= system
      ? { bytes: capped, why: `${MEMORY_LIMIT_ENV}=${process.env[MEMORY_LIMIT_ENV]} caps tensor memory` }
      : { bytes: system, why: 'the system has too little memory left' };
  }

  /** A float32 (or int32) output tensor of `shape`, for the native kernels, in pooled memory. */
  makeOutputInfo(shape: number[], dtype: 'float32' | 'int32'): tf.TensorInfo {
    const n = tf.util.sizeFromShape(shape);
    const values = this.allocate(dtype === 'int32' ? Int32Array : Float32Array, n, shape, dtype);
    return this.makeTensorInfo(shape, dtype, values);
  }

  private hold(values: unknown): void {
    if (!isTypedArray(values)) return;
    const h = this.holdings.get(values.buffer);
    const lent = this.wholeOf.get(values.buffer);
    if (lent) this.wholeOf.delete(values.buffer);
    const whole = lent ?? (values.byteOffset === 0 && values.byteLength === values.buffer.byteLength && !(values.buffer instanceof SharedArrayBuffer) ? values : null);
    if (h) {
      h.count++;
      h.whole ??= whole;
    } else {
      this.holdings.set(values.buffer, { count: 1, whole });
      this.pool.grew(values.buffer.byteLength);
    }
  }

  private unhold(values: unknown): void {
    if (!isTypedArray(values)) return;
    const h = this.holdings.get(values.buffer);
    if (!h || --h.count > 0) return;
    this.holdings.delete(values.buffer);
    this.pool.liveBytes -= values.buffer.byteLength;
    if (h.whole) this.pool.put(h.whole);
  }

  /** Data handed in by tf.tensor() and friends: copied, so the caller keeps its array. */
  override write(values: tf.backend_util.BackendValues, shape: number[], dtype: tf.DataType): DataId {
    if (isTypedArray(values) && dtype !== 'string') {
      const copy = this.allocate(values.constructor as TypedArrayCtor, values.length, shape, dtype);
      copy.set(values);
      values = copy;
    }
    const dataId = super.write(values, shape, dtype);
    this.hold(values);
    return dataId;
  }

  /** Kernel outputs: stored as they are (the kernel made them for this tensor). */
  override makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues | string[]): tf.TensorInfo {
    if (dtype === 'string' || !isTypedArray(values)) return super.makeTensorInfo(shape, dtype, values);
    const dataId = MathBackendCPU.prototype.write.call(this, values, shape, dtype);
    this.hold(values);
    return { dataId, shape, dtype };
  }

  override move(dataId: DataId, values: tf.backend_util.BackendValues, shape: number[], dtype: tf.DataType, refCount: number): void {
    if (isTypedArray(values) && dtype !== 'string') {
      const copy = this.allocate(values.constructor as TypedArrayCtor, values.length, shape, dtype);
      copy.set(values);
      values = copy;
    }
    if (this.data.has(dataId)) this.unhold(this.data.get(dataId).values);
    super.move(dataId, values, shape, dtype, refCount);
    this.hold(values);
  }

  override disposeData(dataId: DataId, force = false): boolean {
    if (!this.data.has(dataId)) return true;
    const { values } = this.data.get(dataId);
    const done = super.disposeData(dataId, force);
    if (!this.data.has(dataId)) this.unhold(values);
    return done;
  }

  /** A copy: the result may outlive the tensor, whose buffer is then reused. */
  override readSync(dataId: DataId): tf.backend_util.BackendValues {
    const v = super.readSync(dataId);
    return isTypedArray(v) ? v.slice() : v;
  }

  /** Kernels read through this: no copy. */
  override bufferSync<R extends tf.Rank, D extends tf.DataType>(t: tf.TensorInfo): tf.TensorBuffer<R, D> {
    if (t.dtype === 'string') return super.bufferSync(t);
    return tf.buffer(t.shape, t.dtype as D, this.values(t) as never) as unknown as tf.TensorBuffer<R, D>;
  }

  override memory(): { unreliable: boolean; reasons: string[] } & Record<string, unknown> {
    return { unreliable: false, reasons: [], liveBytes: this.pool.liveBytes, pooledBytes: this.pool.freeBytes, peakLiveBytes: this.pool.peakLiveBytes };
  }
}

let registered = false;

/**
 * Registers the `native` backend (not yet selected): tfjs's cpu kernels
 * copied, the native ones over them. Returns the native kernels' description
 * ("oneDNN 2.6.3 (OpenMP, avx2), 2 threads"), or null and why the addon is unavailable.
 */
export async function registerNativeBackend(threads: number): Promise<{ native: string | null; why: string | null }> {
  const { loadOneDnn, registerNativeKernels } = await import('./native-kernels');
  const { addon, why } = loadOneDnn();
  if (!addon) return { native: null, why };
  if (!registered) {
    tf.registerBackend(NATIVE_BACKEND, () => new NativeBackend(addon), 0);
    tf.copyRegisteredKernels('cpu', NATIVE_BACKEND);
    registered = true;
  }
  return registerNativeKernels(threads, NATIVE_BACKEND);
}
