/**
 * The engine interface: what one backend module of ./backends says about
 * itself, and what the rest of granular may know about the backend that runs
 * (capabilities, never its name). Modelled on tfjs's own backends (one module
 * that registers itself) and PyTorch's device-agnostic model code.
 */

/**
 * What the running backend can do. Model, training and measuring code reads
 * these (./index engineCapabilities) instead of asking which backend runs.
 */
export interface Capabilities {
  /**
   * tensor.dataSync()/arraySync() work. False on a GPU backend (webgpu:
   * "OffscreenCanvas is not defined"): read with `await tensor.data()`.
   */
  syncReadback: boolean;
  /**
   * The largest tensor in bytes one kernel can bind (webgpu: the device's
   * maxStorageBufferBindingSize), or null when only free memory limits it.
   * The engine refuses a larger tensor before making it (./webgpu-guard).
   */
  maxTensorBytes: number | null;
  /**
   * GranularBatchNormTrain and its gradient are kernels of this backend:
   * models/batchnorm.ts then runs batch norm (+ residual + ReLU) in training
   * mode as one op forward and one backward.
   */
  fusedBatchNormTrain: boolean;
  /**
   * GranularLayerNorm and its gradient are kernels of this backend:
   * models/layer-norm.ts then runs LayerNorm as one op forward and one
   * backward (elsewhere: composed from mean, sub, mul, rsqrt, add).
   */
  fusedLayerNorm: boolean;
  /**
   * A bias-free linear Conv2D layer should train as tf.conv2d rather than
   * tfjs-layers' fused conv2d (models/archs.ts plainConv): the unneeded
   * gradient of the images is skipped, with the same bits on this backend.
   */
  plainConvTraining: boolean;
  /** uint8 tensors exist (webgpu has none: upload bytes as int32 and cast on the device). */
  uint8Tensors: boolean;
  /**
   * Tensors live in device memory apart from the host's (a GPU): training
   * batches then go up as uint8 codes and are decoded there
   * (train/device-batch.ts). False on the CPU backends.
   */
  deviceMemory: boolean;
}

/** A GPU adapter as the backend found it (webgpu: GPUAdapterInfo and the limits that matter). */
export interface AdapterRecord {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** The graphics API under WebGPU (vulkan, metal, d3d12), when the adapter says. */
  backend?: string;
  /** A software adapter (lavapipe, SwiftShader, WARP): a correctness target, never picked by --backend auto. */
  fallback: boolean;
  limits: Record<string, number>;
}

/** A backend that started. */
export interface Started {
  /** Threads it really runs with. */
  threads: number;
  /** The kernel set that computes (see EngineInfo.kernels). */
  kernels: string;
  /** The native library and its threads when the kernels are native, e.g. "oneDNN 2.6.3 (OpenMP, avx2), 2 threads". */
  native?: string;
  /** The processor it computes on, in words. */
  device: string;
  adapter?: AdapterRecord;
  /** What it tried and did not use while starting (a threaded build that failed, kernels not built). */
  fallbacks?: string[];
  /** One line for a user who could have a faster engine (printed by quickstart). */
  advice?: string;
  /** Wrap its kernels so out-of-memory errors name the kernel and its inputs (./oom guardKernels). */
  guardKernels: boolean;
  /** Runs after each kernel (with guardKernels): throws an error the device raised asynchronously. */
  afterKernel?: (kernel: string, inputs: Array<{ shape: number[] }>) => void;
}

export interface StartOptions {
  threads?: number;
  /** Started by --backend auto: the module may decline what an explicit request accepts (webgpu on a software adapter). */
  auto: boolean;
}

/** One backend. Adding a backend = one module implementing this, plus one line in ./backends/index.ts. */
export interface EngineModule {
  /** The --backend value, and the name of the tfjs backend it registers. */
  name: string;
  /** What it is, in a few words (--help, doctor). */
  summary: string;
  /** How to make it available, for the error of an explicit --backend that cannot start. */
  install: string;
  /**
   * Registers the tfjs backend and selects it (tf.setBackend). Returns what
   * started, or why it is unavailable (nothing selected then).
   */
  start(opts: StartOptions): Promise<Started | { unavailable: string }>;
  /** Whether it could start, without selecting it (doctor): a line that says what it would use, or why not. */
  probe(): Promise<{ available: boolean; detail: string; adapter?: AdapterRecord }>;
  /** What it can do; read live (registered kernels, the device's limits). */
  capabilities(): Capabilities;
  /** Flags or steps that give back an engine that ran with `kernels` (a resume on another kernel set). */
  reproduce?(kernels: string): string;
}

/** 'auto' or the name of a module of ./backends (parseBackend checks it). */
export type BackendChoice = string;

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
  /** The native library and its thread count when kernels is 'onednn', e.g. "oneDNN 2.6.3 (OpenMP, avx2), 2 threads". */
  native?: string;
  /** The GPU adapter (webgpu). Part of the engine's identity: another GPU or driver gives other bits. */
  adapter?: AdapterRecord;
  /** Why a preferred backend, or the native kernels, was not used. */
  fallbacks: string[];
  /** A faster engine this machine could have, and how (quickstart prints it). */
  advice?: string;
  capabilities: Capabilities;
  versions: Record<string, string>;
}
