/**
 * WebGPU through Dawn's Node binding (the `webgpu` package: dawn.node, which
 * loads the system's Vulkan loader on Linux, Metal on macOS, D3D12 on
 * Windows) and @tensorflow/tfjs-backend-webgpu's kernels. Both are optional
 * dependencies that ship their binaries in the package (nothing is
 * downloaded at install).
 *
 * --backend auto takes it only on a hardware adapter: a software one
 * (Mesa's lavapipe, SwiftShader, WARP) is 20-50x slower than the native CPU
 * kernels and serves as a correctness target (CI), asked for by name.
 * Errors Dawn reports as device events become exceptions (../webgpu-guard).
 */
import * as fs from 'node:fs';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { guardDevice } from '../webgpu-guard';
import { AdapterRecord, Capabilities, EngineModule } from '../types';

/** The limits doctor and env.json record (bytes or counts), and the ones tfjs's kernels need raised to the adapter's. */
const LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
] as const;

/** Names of software adapters, for drivers that do not set isFallbackAdapter. */
const SOFTWARE = /llvmpipe|lavapipe|swiftshader|\bwarp\b|basic render|software|\bcpu\b/i;

type Gpu = { requestAdapter(o?: { powerPreference?: string }): Promise<Adapter | null> };
type Adapter = {
  info: Record<string, unknown>;
  isFallbackAdapter?: boolean;
  limits: Record<string, number>;
  requestDevice(d: { requiredLimits: Record<string, number> }): Promise<unknown>;
};

let dawn: { gpu: Gpu; globals: Record<string, unknown> } | null = null;
let started: { limit: number } | null = null;

// `webgpu` is an ES module; compiled to CommonJS, a plain import() would become require().
const importEsm = new Function('url', 'return import(url)') as (url: string) => Promise<{ create(flags: string[]): Gpu; globals: Record<string, unknown> }>;

/** Dawn's entry point, loaded once: null and why when the package or its binary does not load. */
async function loadDawn(): Promise<{ gpu: Gpu; globals: Record<string, unknown> } | string> {
  if (dawn) return dawn;
  let entry: string;
  try {
    entry = require.resolve('webgpu');
  } catch {
    return "the 'webgpu' package is not installed (an optional dependency: npm ci installs it where its binary exists)";
  }
  try {
    const m = await importEsm(pathToFileURL(entry).href);
    dawn = { gpu: m.create([]), globals: m.globals };
    return dawn;
  } catch (e) {
    return `Dawn (dawn.node) does not load: ${(e as Error).message.split('\n')[0]}`;
  }
}

/**
 * On Linux a hardware GPU is a device node: /dev/dri/renderD* (Mesa,
 * amdgpu, i915), /dev/nvidia* or /dev/dxg (WSL2). Without one only a
 * software adapter can exist, so --backend auto skips loading Dawn (whose
 * adapter enumeration takes ~0.1 s and prints driver warnings on lavapipe).
 */
function mayHaveGpu(): boolean {
  if (process.platform !== 'linux') return true;
  const has = (dir: string, re: RegExp) => {
    try {
      return fs.readdirSync(dir).some((f) => re.test(f));
    } catch {
      return false;
    }
  };
  return has('/dev/dri', /^renderD\d+$/) || has('/dev', /^(nvidia\d+|dxg)$/);
}

function adapterRecord(a: Adapter): AdapterRecord {
  const s = (k: string) => String(a.info[k] ?? '');
  const flagged = a.info.isFallbackAdapter ?? a.isFallbackAdapter;
  const named = SOFTWARE.test(`${s('architecture')} ${s('device')} ${s('description')}`);
  return {
    vendor: s('vendor'),
    architecture: s('architecture'),
    device: s('device'),
    description: s('description'),
    fallback: flagged === true || named,
    limits: Object.fromEntries(LIMITS.map((k) => [k, a.limits[k]])),
  };
}

/** "llvmpipe: Mesa 25.0.7 (LLVM 15.0.6), software" and the like. */
export function adapterName(r: AdapterRecord): string {
  const name = r.description || r.device || `${r.vendor} ${r.architecture}`.trim() || 'unknown adapter';
  return `${name}${r.fallback ? ', software adapter' : ''}`;
}

/** The first adapter Dawn offers (high-performance preference), or why none. */
async function findAdapter(): Promise<{ adapter: Adapter; record: AdapterRecord } | string> {
  const d = await loadDawn();
  if (typeof d === 'string') return d;
  const adapter = await d.gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) return NO_ADAPTER;
  return { adapter, record: adapterRecord(adapter) };
}

const NO_ADAPTER =
  process.platform === 'linux'
    ? 'no WebGPU adapter: no Vulkan driver found (install libvulkan1 and your GPU vendor\'s Vulkan driver; Mesa\'s lavapipe for a CPU check)'
    : 'no WebGPU adapter (Metal on macOS and D3D12 on Windows need a GPU and its current driver)';

export const webgpu: EngineModule = {
  name: 'webgpu',
  summary: 'the GPU through WebGPU (Dawn: Vulkan, Metal or D3D12)',
  install:
    "On Linux install the Vulkan loader and your GPU's driver (Debian/Ubuntu: apt-get install libvulkan1 mesa-vulkan-drivers, or NVIDIA's driver with its Vulkan ICD), check with 'vulkaninfo --summary', then 'npm ci' so the optional 'webgpu' package is present; or use --backend native or wasm",
  async start(opts) {
    if (opts.auto && !mayHaveGpu()) return { unavailable: 'skipped by --backend auto: no GPU device on this machine (/dev/dri/renderD*, /dev/nvidia*); a software adapter, if doctor lists one, runs with --backend webgpu' };
    const found = await findAdapter();
    if (typeof found === 'string') return { unavailable: found };
    const { adapter, record } = found;
    if (opts.auto && record.fallback) return { unavailable: `only a software adapter (${adapterName(record)}): --backend auto never picks one; --backend webgpu runs on it` };
    // tfjs-backend-webgpu looks for navigator.gpu and the WebGPU constants (GPUBufferUsage, ...) as globals.
    Object.assign(globalThis, dawn!.globals);
    const nav = (globalThis as { navigator?: object }).navigator;
    Object.defineProperty(globalThis, 'navigator', { value: { ...nav, gpu: dawn!.gpu }, configurable: true, writable: true });
    let WebGPUBackend: new (device: unknown, info: unknown) => tf.KernelBackend;
    try {
      ({ WebGPUBackend } = require('@tensorflow/tfjs-backend-webgpu'));
    } catch (e) {
      return { unavailable: `@tensorflow/tfjs-backend-webgpu does not load: ${(e as Error).message.split('\n')[0]}` };
    }
    // The limits tfjs's kernels are written for, raised to what the adapter offers (as its own factory does).
    const requiredLimits = Object.fromEntries(LIMITS.filter((k) => k !== 'maxStorageBuffersPerShaderStage').map((k) => [k, adapter.limits[k]]));
    const device = (await adapter.requestDevice({ requiredLimits })) as Parameters<typeof guardDevice>[0];
    const backend = new WebGPUBackend(device, adapter.info);
    const limit = Math.min(record.limits.maxStorageBufferBindingSize, record.limits.maxBufferSize);
    const { check } = guardDevice(device, backend as never, limit, adapterName(record));
    // Replace the package's own factory (which would open a second device) with this device.
    if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
    tf.registerBackend('webgpu', () => backend);
    if (!(await tf.setBackend('webgpu'))) return { unavailable: 'setBackend failed' };
    started = { limit };
    return {
      // The GPU computes; JavaScript drives it from one thread.
      threads: 1,
      kernels: 'webgpu',
      device: `${adapterName(record)} (WebGPU)`,
      adapter: record,
      guardKernels: true,
      afterKernel: check,
    };
  },
  async probe() {
    const found = await findAdapter();
    if (typeof found === 'string') return { available: false, detail: found };
    return { available: true, detail: adapterName(found.record), adapter: found.record };
  },
  capabilities(): Capabilities {
    return { syncReadback: false, maxTensorBytes: started?.limit ?? null, fusedBatchNormTrain: false, fusedLayerNorm: false, plainConvTraining: false, uint8Tensors: false, deviceMemory: true };
  },
};
