/**
 * Entry script of the wasm backend's pthread workers under Node (see
 * ./wasm-threads.ts). The package ships the worker only as a string meant for
 * a blob: URL, which Node's worker_threads cannot start; here it runs as a
 * plain file instead. The string expects the CommonJS `require` and
 * `__filename` as globals, as a classic worker script would see them.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { wasmWorkerContents } = require('@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.worker.js') as { wasmWorkerContents: string };
Object.assign(globalThis, { require, __filename });
// The source sits in a template literal, so its "\n" escapes arrived as real
// newlines inside string literals; escape them again, as tfjs does for its blob.
(0, eval)(wasmWorkerContents.replace(/\n/g, '\\n'));
