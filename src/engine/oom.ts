/**
 * Out-of-memory conditions, whichever backend hit them, turned into one error
 * that says which tensor did not fit and what to lower.
 *
 * Where they come from:
 * - the native backend (./native-backend) refuses an allocation that would
 *   not fit in the memory the system has left (MemAvailable, or the cgroup
 *   limit), before the kernel's OOM killer would end the process;
 * - V8 throws a RangeError when it cannot allocate an ArrayBuffer ("Array
 *   buffer allocation failed") or a typed array is too long;
 * - the wasm backend's 4 GiB heap: its malloc returns 0 (./backend makes
 *   that an error at once) or a kernel traps ("memory access out of bounds").
 * Kernels on both backends are wrapped (guardKernels) so the error also names
 * the kernel and its input shapes.
 */
import * as tf from '@tensorflow/tfjs';

export interface OutOfMemoryDetail {
  /** What failed, in words (the allocator's or the runtime's message). */
  cause: string;
  /** Bytes of the allocation that failed, when known. */
  bytes?: number;
  /** Shape and dtype of the tensor that failed, when known. */
  shape?: number[];
  dtype?: string;
  /** Bytes the system had left, when checked. */
  available?: number;
  /** The kernel that was running, and its input shapes. */
  kernel?: string;
  inputShapes?: number[][];
}

export class OutOfMemoryError extends Error {
  constructor(readonly detail: OutOfMemoryDetail) {
    super(describe(detail));
    this.name = 'OutOfMemoryError';
  }
}

/** "a float32 tensor [32,112,112,64] (98.0 MiB) in Conv2D (inputs [32,224,224,3] [7,7,3,64])"; unknown parts left out. */
function describe(d: OutOfMemoryDetail): string {
  const what = d.shape ? `a ${d.dtype ?? 'float32'} tensor [${d.shape.join(',')}]` : 'a tensor';
  const size = d.bytes !== undefined ? ` (${mib(d.bytes)})` : '';
  const where = d.kernel ? ` in ${d.kernel}${d.inputShapes?.length ? ` (inputs ${d.inputShapes.map((s) => `[${s.join(',')}]`).join(' ')})` : ''}` : '';
  const left = d.available !== undefined ? `; ${mib(d.available)} available` : '';
  return `out of memory: ${what}${size}${where} did not fit (${d.cause}${left})`;
}

export function mib(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

const V8_ALLOCATION = /Array buffer allocation failed|Invalid typed array length|Invalid array buffer length|Array buffer too large/i;
const WASM_TRAP = /memory access out of bounds|Aborted\(OOM\)|Cannot enlarge memory|Out of memory|Memory\.grow|could not allocate memory/i;

/**
 * The error as an OutOfMemoryError if it is an out-of-memory condition (see
 * the file comment), else null. `where` adds the kernel and its inputs when
 * the error does not name them yet.
 */
export function asOutOfMemory(err: unknown, where?: { kernel: string; inputs: tf.TensorInfo[] }): OutOfMemoryError | null {
  const located = (d: OutOfMemoryDetail): OutOfMemoryError =>
    new OutOfMemoryError(d.kernel || !where ? d : { ...d, kernel: where.kernel, inputShapes: where.inputs.map((t) => t.shape) });
  if (err instanceof OutOfMemoryError) return err.detail.kernel || !where ? err : located(err.detail);
  if (!(err instanceof Error)) return null;
  if (err instanceof RangeError && V8_ALLOCATION.test(err.message)) {
    return located({ cause: err.message });
  }
  if (WASM_TRAP.test(err.message)) {
    return located({ cause: `${err.message.split('\n')[0]}: the wasm backend's heap is at most 4 GiB; the native backend (npm run build:native) has no such limit` });
  }
  return null;
}

/**
 * What to tell the user: the error's description and the settings to lower,
 * with their current values and a halved batch as the example.
 */
export function outOfMemoryAdvice(err: OutOfMemoryError, settings: { batchSize: number; imageSize?: number; evalBatchSize?: number | null }): string {
  const half = Math.max(1, Math.floor(settings.batchSize / 2));
  const lower = [
    `train.batch_size (now ${settings.batchSize}; e.g. --set train.batch_size=${half})`,
    ...(settings.evalBatchSize ? [`eval.batch_size (now ${settings.evalBatchSize})`] : []),
    ...(settings.imageSize ? [`data.image_size (now ${settings.imageSize})`] : []),
    'or model.width',
  ];
  return `${err.message}. Lower ${lower.join(', ')}, then start a new run.`;
}

const afterKernel = new Map<string, (kernel: string, inputs: tf.TensorInfo[]) => void>();

/**
 * Wraps every kernel registered for `backendName` so out-of-memory errors
 * name the kernel and its inputs; `after`, when given, runs after each of
 * its kernels (webgpu: throws a device error the kernel raised). Idempotent.
 */
export function guardKernels(backendName: string, after?: (kernel: string, inputs: tf.TensorInfo[]) => void): void {
  if (after) afterKernel.set(backendName, after);
  for (const config of tf.getKernelsForBackend(backendName)) {
    if ((config as { guarded?: boolean }).guarded) continue;
    const inner = config.kernelFunc;
    const inputs = (args: Parameters<tf.KernelFunc>[0]) => Object.values(args.inputs).filter((t): t is tf.TensorInfo => Boolean(t));
    const guarded: tf.KernelConfig & { guarded: boolean } = {
      ...config,
      guarded: true,
      kernelFunc: (args) => {
        let out: ReturnType<tf.KernelFunc>;
        try {
          out = inner(args);
          afterKernel.get(backendName)?.(config.kernelName, inputs(args));
        } catch (e) {
          throw asOutOfMemory(e, { kernel: config.kernelName, inputs: inputs(args) }) ?? e;
        }
        return out;
      },
    };
    tf.unregisterKernel(config.kernelName, backendName);
    tf.registerKernel(guarded);
  }
}
