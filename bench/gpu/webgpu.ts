/**
 * The webgpu backend for the GPU bench: Dawn's node binding (`webgpu` on npm)
 * under tfjs's `@tensorflow/tfjs-backend-webgpu`, as the engine starts it
 * (`--backend webgpu`), plus what the bench reports: the adapter, its storage
 * binding limit, and Dawn's uncaptured errors (validation, out of memory),
 * which tfjs would otherwise only log while computing on.
 */
import * as tf from '@tensorflow/tfjs';

interface AdapterInfoLike {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}

export interface WebgpuBench {
  /** "vendor architecture (description), driver ...", as the adapter reports itself. */
  description: string;
  /** Bytes: the largest tensor one kernel may bind. */
  maxStorageBufferBindingSize: number;
  /** Throws the first Dawn error reported since the last call, if any. */
  throwIfErrors(): void;
}

/**
 * Starts tfjs's webgpu backend on Dawn's first high-performance adapter.
 * Errors: no adapter (no Vulkan driver: set VK_ICD_FILENAMES, see
 * bench/gpu/run.sh), or tfjs's backend failing to start.
 */
export async function initWebgpu(): Promise<WebgpuBench> {
  // The package is an ES module; Node >= 20.19 loads it with require().
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { create, globals } = require('webgpu') as { create(flags: string[]): unknown; globals: Record<string, unknown> };
  Object.assign(globalThis, globals);
  const gpu = create([]) as { requestAdapter(o?: object): Promise<{ info: AdapterInfoLike; isFallbackAdapter?: boolean; limits: Record<string, number> } | null> };
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Error('webgpu: no adapter (no Vulkan driver found: install one, or point VK_ICD_FILENAMES at its ICD json)');
  // The backend registers itself at require time, only where navigator.gpu exists.
  require('@tensorflow/tfjs-backend-webgpu');
  if (!(await tf.setBackend('webgpu'))) throw new Error('webgpu: tfjs could not start its webgpu backend');
  tf.enableProdMode();
  const info = adapter.info;
  const fallback = info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false;
  const description = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') + (fallback ? ' (software fallback adapter)' : '');
  const errors: string[] = [];
  const device = (tf.backend() as unknown as { device: { onuncapturederror: ((e: { error: { message: string } }) => void) | null } }).device;
  device.onuncapturederror = (e) => errors.push(e.error.message.split('\n')[0]);
  return {
    description: description || 'unknown adapter',
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    throwIfErrors() {
      if (errors.length) throw new Error(`webgpu: ${errors.length} Dawn error(s), first: ${errors[0]}`);
    },
  };
}
