/**
 * The wasm backend on several threads under Node.
 *
 * tfjs-backend-wasm never picks its threaded build in Node (its
 * WASM_HAS_MULTITHREAD_SUPPORT flag is false there, tfjs issue 3830), and
 * forcing the flag fails: the pthread workers are started from a blob: URL
 * and the main script is handed to them as a Blob, neither of which Node's
 * worker_threads can load. Here the 'wasm' backend is registered again with
 * a factory that starts the package's own threaded SIMD build
 * (wasm-out/tfjs-backend-wasm-threaded-simd.js) with file paths instead: the
 * worker entry is ./wasm-thread-worker.js and the main script is the
 * package's file, which each worker evaluates.
 *
 * One more obstacle: the C++ side caps the XNNPACK pool at
 * emscripten_num_logical_cores() / 2 (it assumes two hyperthreads per core),
 * computed once while the module starts; in Node that is os.cpus().length / 2,
 * so a 2-vCPU machine would get 1 thread whatever was asked. os.cpus is
 * stretched to twice the requested count for exactly that start-up.
 */
import * as path from 'node:path';
import type { Worker } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { BackendWasm, getThreadsCount, setThreadsCount } from '@tensorflow/tfjs-backend-wasm';

/** The priority the package registers 'wasm' with (base.ts WASM_PRIORITY). */
const WASM_PRIORITY = 2;
const MAIN_SCRIPT = require.resolve('@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.js');
const WASM_OUT = path.dirname(MAIN_SCRIPT);
const WORKER_SCRIPT = path.join(__dirname, 'wasm-thread-worker.js');

interface EmscriptenModule {
  cwrap(name: string, returnType: string | null, argTypes: string[]): (...args: number[]) => number;
  tfjs: Record<string, unknown>;
}

type ModuleFactory = (config: Record<string, unknown>) => Promise<EmscriptenModule>;

let requestedThreads = 1;
let stockFactory: (() => tf.KernelBackend | Promise<tf.KernelBackend>) | undefined;

async function createThreadedBackend(): Promise<BackendWasm> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const factory = require(MAIN_SCRIPT) as ModuleFactory;
  // The module object itself (not an import * copy), which the wasm glue's require('os') also returns.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const os = require('node:os') as { cpus: () => unknown[] };
  const realCpus = os.cpus;
  os.cpus = () => {
    const cpus = realCpus();
    return Array.from({ length: 2 * requestedThreads }, (_, i) => cpus[i % cpus.length]);
  };
  let module: EmscriptenModule;
  try {
    module = await factory({
      locateFile: (file: string) => (file.endsWith('.worker.js') ? WORKER_SCRIPT : path.join(WASM_OUT, file)),
      mainScriptUrlOrBlob: MAIN_SCRIPT,
    });
  } finally {
    os.cpus = realCpus;
  }
  // The bridge tfjs's own init() builds (backend_wasm.ts).
  module.tfjs = {
    init: module.cwrap('init', null, []),
    initWithThreadsCount: module.cwrap('init_with_threads_count', null, ['number']),
    getThreadsCount: module.cwrap('get_threads_count', 'number', []),
    registerTensor: module.cwrap('register_tensor', null, ['number', 'number', 'number']),
    disposeData: module.cwrap('dispose_data', null, ['number']),
    dispose: module.cwrap('dispose', null, []),
  };
  const backend = new BackendWasm(module as never);
  // The pool's workers would keep Node's event loop, and so the process,
  // alive after the last line of a command; they only ever run on request.
  const pthread = (module as unknown as { PThread?: { unusedWorkers: Worker[]; runningWorkers: Worker[] } }).PThread;
  for (const worker of [...(pthread?.unusedWorkers ?? []), ...(pthread?.runningWorkers ?? [])]) worker.unref();
  return backend;
}

/**
 * Makes the next tf.setBackend('wasm') start the threaded build with
 * `threads` threads (the XNNPACK thread pool). Call before the backend
 * initialises; getThreadsCount() tells the count it really got.
 */
export function useThreadedWasm(threads: number): void {
  stockFactory ??= tf.findBackendFactory('wasm') ?? undefined;
  requestedThreads = threads;
  setThreadsCount(threads);
  tf.removeBackend('wasm');
  tf.registerBackend('wasm', createThreadedBackend, WASM_PRIORITY);
}

/** The package's own single-threaded factory again (after the threaded build failed to start). */
export function useStockWasm(): void {
  if (!stockFactory) return;
  setThreadsCount(1);
  tf.removeBackend('wasm');
  tf.registerBackend('wasm', stockFactory, WASM_PRIORITY);
}

/** Threads in the running wasm backend's XNNPACK pool. */
export function wasmThreadsCount(): number {
  return Math.max(1, getThreadsCount());
}
