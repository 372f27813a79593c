/**
 * What the rest of granular may use of the engine: start it, ask what it can
 * do, compare it with the engine a run was trained on, and the errors it
 * raises. models/, train/, measure/ and runs/ import from here only, and
 * never ask which backend runs (DESIGN.md --backend).
 */
export { backendNames, engineCapabilities, engineMismatch, initEngine, parseBackend, probeBackends } from './backend';
export type { AdapterRecord, BackendChoice, Capabilities, EngineIdentity, EngineInfo } from './backend';
export { BATCH_NORM_TRAIN, BATCH_NORM_TRAIN_GRAD, GELU, GELU_GRAD, LAYER_NORM, LAYER_NORM_GRAD, SOFTMAX_GRAD } from './kernel-names';
export { asOutOfMemory, mib, OutOfMemoryError, outOfMemoryAdvice } from './oom';
export { DeviceLostError, GpuError } from './webgpu-guard';
