/**
 * Nothing wrong without an error on the webgpu backend.
 *
 * Dawn reports a failed GPU call (an invalid bind group, a buffer it could not
 * allocate) as an event on the device, not as an exception: the call returns,
 * the command buffer that used it is dropped at submit, and the output keeps
 * whatever its buffer held (zeros). A tensor larger than the device's largest
 * storage binding (maxStorageBufferBindingSize: 128 MiB on lavapipe, 1-4 GiB on
 * discrete GPUs) fails that way in every kernel that binds it. Here:
 * - a tensor over the binding limit is refused when it is made (backend write/
 *   move), as an OutOfMemoryError naming its shape, size and the limit, which
 *   the kernel guard (./oom guardKernels) locates in its kernel;
 * - every uncaptured device error is kept and thrown after the kernel that
 *   raised it (Dawn dispatches them synchronously) or at the next read;
 * - a lost device (driver reset, device.destroy()) throws DeviceLostError,
 *   which the run records as resumable: its last checkpoint is intact.
 */
import { mib, OutOfMemoryError } from './oom';

/** The GPU device stopped existing under the run (driver reset, GPU removed, device.destroy()). Resumable. */
export class DeviceLostError extends Error {
  /** runs/ writes `resume` into summary.json for errors that leave the last checkpoint valid. */
  readonly resumable = true;
  constructor(readonly reason: string, detail: string, where: string) {
    super(`the GPU device (${where}) was lost (${reason}${detail ? `: ${detail}` : ''}); nothing after the last checkpoint was kept`);
    this.name = 'DeviceLostError';
  }
}

/** A validation or internal error Dawn raised on the device. */
export class GpuError extends Error {
  constructor(readonly kind: string, message: string, readonly kernel?: string, inputShapes?: number[][]) {
    super(`WebGPU ${kind} error${kernel ? ` in ${kernel}${inputShapes?.length ? ` (inputs ${inputShapes.map((s) => `[${s.join(',')}]`).join(' ')})` : ''}` : ''}: ${firstLines(message)}`);
    this.name = 'GpuError';
  }
}

function firstLines(m: string): string {
  return m.split('\n').slice(0, 3).join(' ').trim();
}

/** The parts of GPUDevice this file uses. */
export interface DeviceLike {
  addEventListener(type: 'uncapturederror', listener: (ev: { error: { message: string; constructor: { name: string } } }) => void): void;
  lost: Promise<{ reason: string; message: string }>;
}

/** The parts of tfjs-backend-webgpu's WebGPUBackend this file wraps. */
export interface WebGpuBackendLike {
  write(values: unknown, shape: number[], dtype: string): object;
  move(dataId: object, values: unknown, shape: number[], dtype: string, refCount: number): void;
  read(dataId: object): Promise<unknown>;
}

/** Bytes a tensor takes on the GPU: tfjs-backend-webgpu stores every dtype (bool included) in 4-byte words. */
export function gpuBytes(shape: readonly number[]): number {
  return 4 * shape.reduce((a, b) => a * b, 1);
}

/**
 * Watches `device` and wraps `backend` (see the file comment). `where` names
 * the adapter in messages. Returns `check`, which throws the first pending
 * device error (naming `kernel` and its inputs), for the kernel guard to
 * call after every kernel.
 */
export function guardDevice(device: DeviceLike, backend: WebGpuBackendLike, limitBytes: number, where: string): { check: (kernel?: string, inputs?: Array<{ shape: number[] }>) => void } {
  let pending: { kind: string; message: string } | null = null;
  let lost: DeviceLostError | null = null;
  device.addEventListener('uncapturederror', (ev) => {
    // The first error is the cause; later ones are mostly "invalid due to a previous error".
    pending ??= { kind: ev.error.constructor.name.replace(/^GPU|Error$/g, '').toLowerCase() || 'device', message: ev.error.message };
  });
  void device.lost.then((info) => {
    lost = new DeviceLostError(info.reason, info.message, where);
  });
  const check = (kernel?: string, inputs?: Array<{ shape: number[] }>) => {
    if (lost) throw lost;
    if (!pending) return;
    const e = pending;
    pending = null;
    const inputShapes = inputs?.map((t) => t.shape);
    if (e.kind === 'outofmemory') throw new OutOfMemoryError({ cause: `the GPU (${where}) is out of memory: ${firstLines(e.message)}`, ...(kernel ? { kernel, inputShapes } : {}) });
    throw new GpuError(e.kind, e.message, kernel, inputShapes);
  };
  const refuse = (shape: number[], dtype: string) => {
    if (dtype === 'string') return;
    const bytes = gpuBytes(shape);
    if (bytes > limitBytes) {
      throw new OutOfMemoryError({ cause: `larger than the largest tensor this GPU binds (maxStorageBufferBindingSize ${mib(limitBytes)} on ${where})`, bytes, shape, dtype });
    }
  };
  const { write, move, read } = backend;
  backend.write = function (values, shape, dtype) {
    refuse(shape, dtype);
    return write.call(this, values, shape, dtype);
  };
  backend.move = function (dataId, values, shape, dtype, refCount) {
    refuse(shape, dtype);
    move.call(this, dataId, values, shape, dtype, refCount);
  };
  backend.read = async function (dataId) {
    check();
    let values: unknown;
    try {
      values = await read.call(this, dataId);
    } catch (e) {
      // A read on a lost device rejects with an empty message; the lost promise settles first.
      await Promise.resolve();
      if (lost) throw lost;
      throw e;
    }
    check();
    return values;
  };
  return { check };
}
