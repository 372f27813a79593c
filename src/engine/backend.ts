/**
 * The engine: picks and starts one backend of ./backends per process, and
 * answers what it can do. Everything here reads the one list of backend
 * modules; nothing here knows a backend by name.
 */
import * as tf from '@tensorflow/tfjs';
import { UsageError } from '../util/errors';
import { BACKENDS } from './backends';
import { hostCapabilities } from './backends/common';
import { installLowMemoryGradients } from './gradients';
import { guardKernels } from './oom';
import { AdapterRecord, BackendChoice, Capabilities, EngineInfo, EngineModule, Started } from './types';

export type { AdapterRecord, BackendChoice, Capabilities, EngineInfo } from './types';

let active: EngineInfo | null = null;

function moduleNamed(name: string): EngineModule | undefined {
  return BACKENDS.find((m) => m.name === name);
}

/**
 * Picks and starts the backend once per process: `requested` by name, or
 * with 'auto' the first module of ./backends that starts (a hardware GPU,
 * else TensorFlow, else the native kernels, else wasm, else cpu), recording
 * why each earlier one was not used. Every backend gets the freeing
 * backpropagation of ./gradients and, except TensorFlow, out-of-memory errors
 * that name the kernel (./oom). The result goes into env.json.
 * Throws UsageError when a named backend cannot start (with how to get it),
 * and Error when asked to switch backends within one process.
 */
export async function initEngine(requested: BackendChoice = 'auto', threads?: number): Promise<EngineInfo> {
  if (active) {
    if (requested !== 'auto' && requested !== active.requested && active.backend !== requested) {
      throw new Error(`engine already initialised with '${active.backend}', cannot switch to '${requested}' in the same process`);
    }
    return active;
  }
  const auto = requested === 'auto';
  const candidates = auto ? BACKENDS : [moduleNamed(parseBackend(requested))!];
  const fallbacks: string[] = [];
  let chosen: { module: EngineModule; started: Started } | null = null;
  for (const module of candidates) {
    const r = await module.start({ threads, auto });
    if ('unavailable' in r) {
      if (!auto) throw new UsageError(`--backend ${module.name} is unavailable: ${r.unavailable}. ${module.install}.`);
      fallbacks.push(`${module.name}: ${r.unavailable}`);
      continue;
    }
    chosen = { module, started: r };
    break;
  }
  // The last module (cpu) always starts.
  if (!chosen) throw new Error(`no backend started: ${fallbacks.join('; ')}`);
  const { module, started } = chosen;
  await tf.ready();
  // Production mode: no debug checks, and no console banner urging tfjs-node on every run.
  tf.enableProdMode();
  installLowMemoryGradients();
  if (started.guardKernels) guardKernels(module.name, started.afterKernel);
  active = {
    backend: module.name,
    requested,
    threads: started.threads,
    kernels: started.kernels,
    ...(started.native ? { native: started.native } : {}),
    device: started.device,
    ...(started.adapter ? { adapter: started.adapter } : {}),
    fallbacks: [...fallbacks, ...(started.fallbacks ?? [])],
    ...(started.advice ? { advice: started.advice } : {}),
    capabilities: module.capabilities(),
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
 * What the backend that runs now can do (see Capabilities). Read live, so it
 * also answers for a backend a test selected with tf.setBackend.
 */
export function engineCapabilities(): Capabilities {
  const name = tf.getBackend() ?? 'cpu';
  return moduleNamed(name)?.capabilities() ?? hostCapabilities(name);
}

/** The names --backend accepts: 'auto' and every module of ./backends. */
export function backendNames(): string[] {
  return ['auto', ...BACKENDS.map((m) => m.name)];
}

/** --backend (else GRANULAR_BACKEND, else 'auto'), checked against the list. Throws UsageError naming the valid ones. */
export function parseBackend(v: string | undefined): BackendChoice {
  const s = v ?? process.env.GRANULAR_BACKEND ?? 'auto';
  if (!backendNames().includes(s)) throw new UsageError(`--backend '${s}' is not one of ${backendNames().join(', ')}.`);
  return s;
}

/** What every backend would do on this machine, for doctor: the one in use, and whether each other could start and on what. */
export async function probeBackends(): Promise<Array<{ name: string; summary: string; active: boolean; available: boolean; detail: string; adapter?: AdapterRecord }>> {
  const out = [];
  for (const m of BACKENDS) {
    const inUse = active?.backend === m.name;
    const p = inUse ? { available: true, detail: active!.device, ...(active!.adapter ? { adapter: active!.adapter } : {}) } : await m.probe();
    out.push({ name: m.name, summary: m.summary, active: inUse, ...p });
  }
  return out;
}

/** What makes two engines give the same bits: backend, kernel set, threads, and the GPU adapter where there is one. */
export interface EngineIdentity {
  backend: string;
  threads: number;
  kernels?: string;
  /** env.json's native_kernels, e.g. "oneDNN 2.6.3 (OpenMP, avx2), 2 threads". */
  native_kernels?: string;
  adapter?: Pick<AdapterRecord, 'device' | 'description'>;
}

/**
 * The instruction set oneDNN generated its kernels for, from a native_kernels
 * description ("oneDNN 2.6.3 (OpenMP, avx2), 2 threads" -> "avx2"); null when
 * the description does not name one (runs recorded before it was, or no
 * native kernels). Two CPUs with different sets (avx2, avx512_core) run
 * different kernels and sum in a different order: results agree to ~1e-6,
 * not to the bit.
 */
export function nativeIsa(native?: string): string | null {
  const inParens = /\(([^)]*)\)/.exec(native ?? '')?.[1];
  const last = inParens?.split(',').pop()?.trim();
  return last && last !== 'OpenMP' ? last : null;
}

/**
 * How `now` differs from the engine a run was trained on (`before`, from its
 * env.json), as words and the options that give that engine back; null when
 * they match: same backend, thread count, kernel set, GPU adapter, and for
 * the native kernels the same CPU instruction set (nativeIsa). Runs from
 * before `kernels` was recorded ran on the backend's own kernels.
 */
export function engineMismatch(before: EngineIdentity, now: EngineInfo): { what: string; resume: string } | null {
  const kernels = before.kernels ?? before.backend;
  const gpu = (a?: Pick<AdapterRecord, 'device' | 'description'>) => (a ? `${a.description || a.device}` : null);
  const sameGpu = gpu(before.adapter) === gpu(now.adapter);
  const isaThen = kernels === now.kernels ? nativeIsa(before.native_kernels) : null;
  const isaNow = nativeIsa(now.native);
  const sameIsa = isaThen === null || isaNow === null || isaThen === isaNow;
  if (before.backend === now.backend && before.threads === now.threads && kernels === now.kernels && sameGpu && sameIsa) return null;
  let what = `trained on ${before.backend} with ${before.threads} thread(s); this process has ${now.backend} with ${now.threads}`;
  let hint = '';
  if (kernels !== now.kernels) {
    what += ` (kernels: ${kernels} then, ${now.kernels} now)`;
    hint = moduleNamed(before.backend)?.reproduce?.(kernels) ?? '';
  }
  if (!sameGpu) what += ` (GPU: ${gpu(before.adapter) ?? 'none'} then, ${gpu(now.adapter) ?? 'none'} now)`;
  if (!sameIsa) what += ` (CPU kernels for ${isaThen} then, ${isaNow} now: another CPU)`;
  const where = before.adapter && !sameGpu ? ' on a machine with that GPU and driver' : !sameIsa ? ` on a CPU where oneDNN uses ${isaThen} (doctor prints it)` : '';
  return { what, resume: `--backend ${before.backend} --threads ${before.threads}${hint}${where}` };
}
