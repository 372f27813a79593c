import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { UsageError } from '../util/errors';
import { installLowMemoryGradients } from './gradients';
import { guardKernels, OutOfMemoryError } from './oom';

export type BackendChoice = 'auto' | 'tensorflow' | 'native' | 'wasm' | 'cpu';

export interface EngineInfo {
  backend: string;
  requested: BackendChoice;
  threads: number;
  device: string;
  /**
   * The kernel set that computes: 'onednn' (the native kernels of
   * ./native-kernels, on the native backend or over the wasm one), 'wasm'
   * (our wasm kernels alone), or the backend's name. Part of the engine's
   * identity, with the backend: the sets differ in the last bits of their sums.
   */
  kernels: string;
  /** The native library and its thread count when kernels is 'onednn', e.g. "oneDNN 2.6.3 (OpenMP), 2 threads". */
  native?: string;
  /**
   * Tensors live in device memory apart from the host's (a GPU): training
   * batches then go up as uint8 codes and are decoded there
   * (train/device-batch.ts). Unset on the CPU backends.
   */
  deviceMemory?: boolean;
  /** Why a preferred backend, or the native kernels, was not used. */
  fallbacks: string[];
  versions: Record<string, string>;
}

let active: EngineInfo | null = null;

function tryRequire(name: string): string | null {
  try {
    require(name);
    return null;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  }
}

/** Load the native TensorFlow binding if installed; returns why not otherwise. */
function loadTensorflow(): string | null {
  const gpu = tryRequire('@tensorflow/tfjs-node-gpu');
  if (gpu === null) return null;
  const cpu = tryRequire('@tensorflow/tfjs-node');
  return cpu === null ? null : `@tensorflow/tfjs-node-gpu: ${gpu}; @tensorflow/tfjs-node: ${cpu}`;
}

/**
 * Pick and initialise the tfjs backend once per process: tensorflow (native
 * TensorFlow, GPU if present) when it loads; else `native` (./native-backend:
 * tensors in ordinary memory, oneDNN kernels) when the addon is built; else
 * wasm with our training kernels; else the pure-JS cpu backend. The choice
 * goes into env.json. Every backend gets the freeing backpropagation of
 * ./gradients and out-of-memory errors that name the tensor (./oom).
 */
export async function initEngine(requested: BackendChoice = 'auto', threads?: number): Promise<EngineInfo> {
  if (active) {
    if (requested !== 'auto' && requested !== active.requested && active.backend !== requested) {
      throw new Error(`engine already initialised with '${active.backend}', cannot switch to '${requested}' in the same process`);
    }
    return active;
  }
  const fallbacks: string[] = [];
  let backend: string | null = null;
  let native: string | null = null;
  let nThreads = 1;
  if (requested === 'tensorflow' || requested === 'auto') {
    const why = loadTensorflow();
    if (why === null && (await tf.setBackend('tensorflow'))) {
      backend = 'tensorflow';
      nThreads = threads ?? defaultThreads();
    } else if (requested === 'tensorflow') {
      throw new UsageError(
        `--backend tensorflow: the native TensorFlow binding does not load (${why ?? 'setBackend failed'}). ` +
          `Install it with 'npm install @tensorflow/tfjs-node-gpu' (CUDA machines) or 'npm install @tensorflow/tfjs-node', or use --backend native or wasm.`,
      );
    } else fallbacks.push(`tensorflow: not installed (${why})`);
  }
  if (!backend && (requested === 'native' || requested === 'auto')) {
    const { registerNativeBackend, NATIVE_BACKEND, memoryLimit } = await import('./native-backend');
    try {
      memoryLimit();
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    nThreads = threads ?? defaultThreads();
    const r = await registerNativeBackend(nThreads);
    if (r.native && (await tf.setBackend(NATIVE_BACKEND))) {
      backend = NATIVE_BACKEND;
      native = r.native;
      nThreads = Number(/(\d+) threads?$/.exec(r.native)?.[1] ?? nThreads);
    } else if (requested === 'native') {
      throw new UsageError(`--backend native: the native kernels are unavailable (${r.why ?? 'setBackend failed'}). Build them with 'npm run build:native', or use --backend wasm.`);
    } else fallbacks.push(`native: ${r.why ?? 'failed to initialise'}`);
  }
  if (!backend && (requested === 'wasm' || requested === 'auto')) {
    const why = tryRequire('@tensorflow/tfjs-backend-wasm');
    if (why === null) {
      const { registerWasmTrainingKernels } = await import('./wasm-kernels');
      registerWasmTrainingKernels();
      backend = await initWasm(threads ?? defaultThreads(), fallbacks);
      // With --backend auto the native kernels were tried above already.
      if (backend === 'wasm' && requested === 'wasm') native = await useNativeKernels(fallbacks);
      if (backend === 'wasm') {
        nThreads = wasmThreads;
        catchWasmMallocFailures();
      }
    } else if (requested === 'wasm') {
      throw new UsageError(`--backend wasm: @tensorflow/tfjs-backend-wasm does not load (${why}). Run 'npm ci' again.`);
    } else fallbacks.push(`wasm: ${why}`);
  }
  if (!backend) {
    await tf.setBackend('cpu');
    backend = 'cpu';
    nThreads = 1;
  }
  await tf.ready();
  // Production mode: no debug checks, and no console banner urging tfjs-node on every run.
  tf.enableProdMode();
  installLowMemoryGradients();
  if (backend !== 'tensorflow') guardKernels(backend);
  active = {
    backend,
    requested,
    // The count each backend really runs with: wasm reports what its XNNPACK
    // pool got, the native backend what OpenMP took; tensorflow is trusted
    // with what was asked.
    threads: nThreads,
    kernels: native ? 'onednn' : backend,
    ...(native ? { native } : {}),
    device: backend === 'tensorflow' ? tensorflowDevice() : `${os.cpus()[0]?.model ?? 'cpu'} (${os.cpus().length} cores)`,
    fallbacks,
    versions: {
      node: process.version,
      'tfjs-core': tf.version_core,
      'tfjs-layers': tf.version_layers,
      granular: require('../../../package.json').version,
    },
  };
  return active;
}

/**
 * The wasm backend's malloc returns 0 when its heap (at most 4 GiB) cannot
 * grow, and tfjs writes the tensor at address 0 anyway, corrupting the heap
 * until a later kernel traps; and it takes sizes modulo 2^32. Make both an
 * OutOfMemoryError at the allocation instead.
 */
function catchWasmMallocFailures(): void {
  const module = (tf.backend() as unknown as { wasm?: { _malloc(n: number): number; granularChecked?: boolean } }).wasm;
  if (!module || module.granularChecked) return;
  const malloc = module._malloc.bind(module);
  const cause = "the wasm backend's heap is at most 4 GiB; the native backend (npm run build:native) has no such limit";
  module._malloc = (n: number) => {
    // wasm32 takes the size modulo 2^32: 4.4 GB would "succeed" as 105 MB.
    if (n >= 2 ** 32) throw new OutOfMemoryError({ cause, bytes: n });
    const p = malloc(n);
    if (p === 0 && n > 0) throw new OutOfMemoryError({ cause, bytes: n });
    return p;
  };
  module.granularChecked = true;
}

/** All cores; the wasm backend's pool stops at 8 (the workers its build starts). */
function defaultThreads(): number {
  return Math.max(1, os.cpus().length);
}

let wasmThreads = 1;

/**
 * Starts the wasm backend on `threads` threads: the package's threaded SIMD
 * build, started through ./wasm-threads (tfjs itself never uses it in Node,
 * see that file for why and how). If that build fails to start, the stock
 * single-threaded build runs instead and the reason goes into `fallbacks`.
 */
async function initWasm(threads: number, fallbacks: string[]): Promise<string | null> {
  const { useThreadedWasm, useStockWasm, wasmThreadsCount } = await import('./wasm-threads');
  if (threads > 1) {
    useThreadedWasm(threads);
    try {
      if (await tf.setBackend('wasm')) {
        wasmThreads = wasmThreadsCount();
        return 'wasm';
      }
      fallbacks.push(`wasm with ${threads} threads: failed to initialise; running on 1 thread`);
    } catch (e) {
      fallbacks.push(`wasm with ${threads} threads: ${(e as Error).message}; running on 1 thread`);
    }
    useStockWasm();
  }
  if (!(await tf.setBackend('wasm'))) {
    fallbacks.push('wasm: failed to initialise');
    return null;
  }
  wasmThreads = 1;
  return 'wasm';
}

/**
 * Native oneDNN kernels over the wasm ones, on as many threads as the wasm
 * pool got, unless GRANULAR_NATIVE=0 or the addon is not built (the reason
 * goes into `fallbacks`). Returns their description, or null.
 */
async function useNativeKernels(fallbacks: string[]): Promise<string | null> {
  const { registerNativeKernels } = await import('./native-kernels');
  const { native, why } = registerNativeKernels(wasmThreads);
  if (!native) fallbacks.push(`onednn kernels: ${why}`);
  return native;
}

function tensorflowDevice(): string {
  const b = tf.backend() as unknown as { isUsingGpuDevice?: boolean };
  return b.isUsingGpuDevice ? 'GPU (CUDA via libtensorflow)' : `CPU via libtensorflow (${os.cpus().length} cores)`;
}

export function parseBackend(v: string | undefined): BackendChoice {
  const s = v ?? process.env.GRANULAR_BACKEND ?? 'auto';
  if (!['auto', 'tensorflow', 'native', 'wasm', 'cpu'].includes(s)) {
    throw new UsageError(`--backend '${s}' is not one of auto, tensorflow, native, wasm, cpu.`);
  }
  return s as BackendChoice;
}
