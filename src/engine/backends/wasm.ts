/**
 * tfjs's wasm backend (XNNPACK) on its threaded SIMD build, with our training
 * kernels (../wasm-kernels) and, when asked for by name, the oneDNN kernels
 * over them (../native-kernels). Runs wherever Node runs.
 */
import * as tf from '@tensorflow/tfjs';
import { OutOfMemoryError } from '../oom';
import { EngineModule } from '../types';
import { cpuDevice, defaultThreads, hostCapabilities, installed, tryRequire } from './common';
import { ONEDNN_AGAIN } from './native';

export const wasm: EngineModule = {
  name: 'wasm',
  summary: "tfjs's wasm kernels (XNNPACK) and ours; oneDNN over them when built",
  install: "Run 'npm ci' again",
  async start(opts) {
    const why = tryRequire('@tensorflow/tfjs-backend-wasm');
    if (why !== null) return { unavailable: why };
    const { registerWasmTrainingKernels } = await import('../wasm-kernels');
    registerWasmTrainingKernels();
    const fallbacks: string[] = [];
    const threads = await initWasm(opts.threads ?? defaultThreads(), fallbacks);
    if (threads === null) return { unavailable: fallbacks.join('; ') };
    // With --backend auto the native backend was tried already: its kernels would not load here either.
    const native = opts.auto ? null : await useNativeKernels(threads, fallbacks);
    catchWasmMallocFailures();
    return {
      threads,
      kernels: native ? 'onednn' : 'wasm',
      ...(native ? { native } : {}),
      device: cpuDevice(),
      fallbacks,
      ...(native ? {} : { advice: await nativeAdvice() }),
      guardKernels: true,
    };
  },
  async probe() {
    const why = installed('@tensorflow/tfjs-backend-wasm');
    return why ? { available: false, detail: why } : { available: true, detail: `up to 8 threads on ${cpuDevice()}` };
  },
  // wasm32: every tensor lives in one heap of at most 4 GiB.
  capabilities: () => hostCapabilities('wasm', { maxTensorBytes: 2 ** 32 - 1 }),
  reproduce: (kernels) => (kernels === 'onednn' ? ONEDNN_AGAIN : ' and GRANULAR_NATIVE=0'),
};

/** Why the wasm kernels run, and how to get the native ones (npm start is the first thing a new user runs). */
async function nativeAdvice(): Promise<string> {
  const { loadOneDnn } = await import('../native-kernels');
  return `running on the wasm kernels; the native oneDNN kernels are 2.5-4x faster: apt-get install g++ libdnnl-dev && npm run build:native (${loadOneDnn().why ?? 'not built'})`;
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

/**
 * Starts the wasm backend on `threads` threads: the package's threaded SIMD
 * build, started through ../wasm-threads (tfjs itself never uses it in Node,
 * see that file for why and how). If that build fails to start, the stock
 * single-threaded build runs instead and the reason goes into `fallbacks`.
 * Returns the threads its pool got, or null when wasm does not start.
 */
async function initWasm(threads: number, fallbacks: string[]): Promise<number | null> {
  const { useThreadedWasm, useStockWasm, wasmThreadsCount } = await import('../wasm-threads');
  if (threads > 1) {
    useThreadedWasm(threads);
    try {
      if (await tf.setBackend('wasm')) return wasmThreadsCount();
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
  return 1;
}

/**
 * Native oneDNN kernels over the wasm ones, on as many threads as the wasm
 * pool got, unless GRANULAR_NATIVE=0 or the addon is not built (the reason
 * goes into `fallbacks`). Returns their description, or null.
 */
async function useNativeKernels(threads: number, fallbacks: string[]): Promise<string | null> {
  const { registerNativeKernels } = await import('../native-kernels');
  const { native, why } = registerNativeKernels(threads);
  if (!native) fallbacks.push(`onednn kernels: ${why}`);
  return native;
}
