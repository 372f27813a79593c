/**
 * The GPU device check (bench/gpu/run.sh runs it; bench/README.md "GPU"):
 * ImageNet-size training on granular's webgpu backend against PyTorch on the
 * same GPU (fp32 and AMP), side by side in one run. One table: training
 * img/s and peak GPU memory per network, and the ratios.
 *
 *   node dist/bench/gpu/bench.js [--archs resnet18,resnet50 --size 224 --batch 64
 *                                 --steps 10 --warmup 3 --repeat 2 --timeout 180 --budget 420 --no-torch]
 *
 * Each measurement is its own child process (webgpu, then PyTorch fp32, then
 * PyTorch AMP), so each peak is that configuration's alone. The timed step
 * and loop are bench/timing.ts's (the training loop's step, SGD with momentum
 * 0.9, softmax cross-entropy, random inputs, 1000 classes; the fastest of
 * `repeat` blocks of `steps` steps); the loss is read back with `await data()`
 * every step, which also waits for the GPU, as PyTorch's `loss.item()` does.
 *
 * Peak GPU memory, two views:
 * - allocator: webgpu, tfjs's buffer pool (`tf.memory().numBytesAllocatedInGPU`
 *   after the timed steps; the pool never shrinks during a run, so this is its
 *   high-water mark); PyTorch, `torch.cuda.max_memory_reserved()`.
 * - device: where `nvidia-smi` exists, the GPU's `memory.used` sampled every
 *   100 ms while the child runs, minus its value before (includes the CUDA or
 *   Vulkan context; assumes nothing else runs on that GPU).
 *
 * Nothing wrong passes silently: the engine turns Dawn's errors (validation,
 * out of memory, a lost device) into exceptions and refuses a tensor over the
 * device's `maxStorageBufferBindingSize` (src/engine/webgpu-guard.ts); a
 * network whose largest activation is over it is refused before it runs, and
 * a non-finite loss fails the measurement.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { resolveConfig } from '../../src/config/load';
import { initEngine } from '../../src/engine';
import { buildNetwork } from '../../src/models/archs';
import { timeTraining } from '../timing';

const CLASSES = 1000;
const LR = 0.01;
/** The repository (or unpacked payload) root: this file runs from dist/bench/gpu/. */
const ROOT = path.join(__dirname, '..', '..', '..');

interface Options {
  archs: string[];
  size: number;
  batch: number;
  steps: number;
  warmup: number;
  repeat: number;
  torch: boolean;
  /** Seconds one measurement may take before it is stopped and reported as timed out. */
  timeout: number;
  /** Seconds all measurements together may take; later ones are reported as not run. */
  budget: number;
  child: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { archs: ['resnet18', 'resnet50'], size: 224, batch: 64, steps: 10, warmup: 3, repeat: 2, torch: true, timeout: 180, budget: 420, child: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`bench/gpu: ${a} needs a value`);
      return v;
    };
    const int = (name: string) => {
      const n = Number(value());
      if (!Number.isInteger(n) || n < (name === 'warmup' ? 0 : 1)) throw new Error(`bench/gpu: --${name} must be a whole number${name === 'warmup' ? '' : ' >= 1'}`);
      return n;
    };
    if (a === '--archs') o.archs = value().split(',').filter(Boolean);
    else if (a === '--size') o.size = int('size');
    else if (a === '--batch') o.batch = int('batch');
    else if (a === '--steps') o.steps = int('steps');
    else if (a === '--warmup') o.warmup = int('warmup');
    else if (a === '--repeat') o.repeat = int('repeat');
    else if (a === '--timeout') o.timeout = int('timeout');
    else if (a === '--budget') o.budget = int('budget');
    else if (a === '--no-torch') o.torch = false;
    else if (a === '--child') o.child = true;
    else throw new Error(`bench/gpu: unknown option ${a} (see the comment at the top of bench/gpu/bench.ts)`);
  }
  return o;
}

interface Measurement {
  imagesPerSecond: number;
  msPerStep: number;
  /** Allocator peak in bytes (see the file comment). */
  allocatorBytes: number;
  params: number;
  lastLoss: number;
  device: string;
}

/** Child: one network on webgpu; prints one JSON line. */
async function measureWebgpu(o: Options): Promise<Measurement> {
  // granular's own webgpu backend (src/engine/backends/webgpu.ts), as --backend webgpu starts it:
  // Dawn's errors become exceptions at the kernel that caused them, tensors over the binding limit are refused.
  const engine = await initEngine('webgpu', 1);
  const limit = engine.capabilities.maxTensorBytes ?? Infinity;
  const [arch, size] = [o.archs[0], o.size];
  const shape: [number, number, number] = [size, size, 3];
  const cfg = resolveConfig([{ seed: 0, model: { arch }, data: { image_size: size, channels: 3 } }], 'the GPU bench config');
  const net = buildNetwork(cfg, shape, CLASSES);
  // The largest activation must fit one storage binding: Dawn reports a larger
  // one as a validation error and tfjs computes on regardless (issue 20).
  let largest = { name: 'input', bytes: o.batch * size * size * 3 * 4 };
  for (const layer of net.layersModel().layers) {
    const out = layer.outputShape as Array<number | null>;
    const bytes = 4 * o.batch * out.slice(1).reduce<number>((p, d) => p * (d ?? 1), 1);
    if (bytes > largest.bytes) largest = { name: layer.name, bytes };
  }
  if (largest.bytes > limit) {
    throw new Error(
      `activation '${largest.name}' is ${mib(largest.bytes)} MiB at batch ${o.batch}, over this device's largest tensor (maxStorageBufferBindingSize) of ${mib(limit)} MiB: lower --batch or --size`,
    );
  }
  // The loss is read back every step (readEvery 1), which also waits for the GPU, as PyTorch's loss.item() does.
  const t = await timeTraining(net, { batch: o.batch, shape, classes: CLASSES, lr: LR, warmup: o.warmup, repeat: o.repeat, steps: o.steps, readEvery: 1 });
  const memory = tf.memory() as tf.MemoryInfo & { numBytesAllocatedInGPU?: number };
  return {
    imagesPerSecond: t.imagesPerSecond,
    msPerStep: t.msPerStep,
    allocatorBytes: memory.numBytesAllocatedInGPU ?? NaN,
    params: t.params,
    lastLoss: t.lastLoss,
    device: engine.device,
  };
}

/** When the --budget ends (performance.now() ms). */
let deadline = Infinity;

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);

interface ChildResult {
  ok: Measurement | null;
  error: string | null;
  /** Peak rise of the GPU's memory.used over the child's run (MiB), or null without nvidia-smi. */
  deviceMib: number | null;
}

/** The GPU's memory.used in MiB (first GPU, or BENCH_GPU_INDEX), or null without nvidia-smi. */
function nvidiaSmiArgs(): string[] {
  return ['--query-gpu=memory.used', '--format=csv,noheader,nounits', '-i', process.env.BENCH_GPU_INDEX ?? '0'];
}

function hasNvidiaSmi(): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d && fs.existsSync(path.join(d, 'nvidia-smi')));
}

async function sampleOnce(): Promise<number | null> {
  const r = await run('nvidia-smi', nvidiaSmiArgs(), process.env, 20);
  const v = Number(r.stdout.trim().split('\n')[0]);
  return r.code === 0 && Number.isFinite(v) ? v : null;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutSeconds: number): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutSeconds * 1000);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: null, stdout, stderr: `${stderr}${e.message}`, timedOut });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

/** Runs one measurement child, sampling the GPU's memory while it runs. */
async function measure(cmd: string, args: string[], env: NodeJS.ProcessEnv, o: Options, parse: (line: string) => Measurement): Promise<ChildResult> {
  const left = Math.floor((deadline - performance.now()) / 1000);
  if (left < 5) return { ok: null, error: `not run: the --budget of ${o.budget} s was spent`, deviceMib: null };
  const timeout = Math.min(o.timeout, left);
  const smi = hasNvidiaSmi();
  const before = smi ? await sampleOnce() : null;
  let peak = before;
  const sampler = smi && before !== null ? spawn('nvidia-smi', [...nvidiaSmiArgs(), '-lms', '100'], { stdio: ['ignore', 'pipe', 'ignore'] }) : null;
  sampler?.stdout?.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n')) {
      const v = Number(line.trim());
      if (line.trim() && Number.isFinite(v)) peak = Math.max(peak ?? v, v);
    }
  });
  const r = await run(cmd, args, env, timeout);
  sampler?.kill();
  const deviceMib = before !== null && peak !== null ? peak - before : null;
  const last = r.stdout.trim().split('\n').slice(-1)[0] ?? '';
  if (r.timedOut) return { ok: null, error: `timed out after ${timeout} s (${timeout < o.timeout ? '--budget' : '--timeout'})`, deviceMib };
  if (r.code !== 0) {
    const lines = (r.stderr || r.stdout).trim().split('\n').filter((l) => !/^Warning: max\w+ artificially reduced/.test(l));
    const message = lines.find((l) => /^(Error|RuntimeError|torch\.|.*Error:)/.test(l.trim())) ?? lines.slice(-1)[0] ?? '';
    return { ok: null, error: `failed (exit ${r.code}): ${message.trim()}`, deviceMib };
  }
  try {
    return { ok: parse(last), error: null, deviceMib };
  } catch {
    return { ok: null, error: `unreadable output: ${last.slice(0, 200)}`, deviceMib };
  }
}

/** The first interpreter that imports torch: $GRANULAR_BENCH_PYTHON, python3, /usr/bin/python3. */
async function torchPython(): Promise<{ py: string; cuda: boolean; version: string } | null> {
  for (const py of [process.env.GRANULAR_BENCH_PYTHON, 'python3', '/usr/bin/python3'].filter((c): c is string => Boolean(c))) {
    const r = await run(py, ['-c', 'import torch; print(torch.__version__, torch.cuda.is_available())'], process.env, 120);
    if (r.code === 0) {
      const [version, cuda] = r.stdout.trim().split(' ');
      return { py, cuda: cuda === 'True', version };
    }
  }
  return null;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o.child) {
    process.stdout.write(JSON.stringify(await measureWebgpu(o)) + '\n');
    process.exit(0);
  }
  deadline = performance.now() + 1000 * o.budget;
  const torch = o.torch ? await torchPython() : null;
  const torchNote = !o.torch
    ? 'skipped (--no-torch)'
    : !torch
      ? 'skipped (no python imports torch; GRANULAR_BENCH_PYTHON picks the interpreter)'
      : torch.cuda
        ? `torch ${torch.version} on CUDA (${torch.py})`
        : `torch ${torch.version} has no CUDA device: PyTorch runs on the CPU (${os.cpus().length} cores), fp32 only, NOT a GPU comparison`;
  console.log(
    `granular bench/gpu: ${o.size} px, batch ${o.batch}, ${CLASSES} classes, SGD momentum 0.9; ${o.warmup} warmup + best of ${o.repeat} x ${o.steps} steps; one process per measurement\n` +
      `pytorch: ${torchNote}\nnvidia-smi: ${hasNvidiaSmi() ? 'sampled every 100 ms for the device peak' : 'not found (no device peak column)'}`,
  );
  const common = ['--size', String(o.size), '--batch', String(o.batch), '--steps', String(o.steps), '--warmup', String(o.warmup), '--repeat', String(o.repeat)];
  const rows = [
    '| network | px | batch | webgpu img/s | webgpu peak (allocator / device) | PyTorch fp32 img/s | peak | PyTorch AMP img/s | peak | webgpu / fp32 | webgpu / AMP | memory webgpu / fp32 |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  let device = '';
  const peak = (r: ChildResult) =>
    r.ok ? `${Number.isFinite(r.ok.allocatorBytes) ? mib(r.ok.allocatorBytes) : '—'} / ${r.deviceMib === null ? '—' : r.deviceMib.toFixed(0)} MiB` : '—';
  const speed = (r: ChildResult) => (r.ok ? r.ok.imagesPerSecond.toFixed(1) : r.error ?? '—');
  const ratio = (a: ChildResult, b: ChildResult | null) => (a.ok && b?.ok ? `${(a.ok.imagesPerSecond / b.ok.imagesPerSecond).toFixed(2)}×` : '—');
  for (const arch of o.archs) {
    const w = await measure(process.execPath, [__filename, '--child', '--archs', arch, ...common], process.env, o, (l) => JSON.parse(l) as Measurement);
    device ||= w.ok?.device ?? '';
    console.log(`\n== ${arch} ${o.size}px batch ${o.batch} ==\nwebgpu:        ${w.ok ? `${w.ok.imagesPerSecond.toFixed(1)} img/s (${w.ok.msPerStep.toFixed(0)} ms/step), peak ${peak(w)}, ${w.ok.params} params, last loss ${w.ok.lastLoss.toFixed(3)} [${w.ok.device}]` : w.error}`);
    const torchRuns: Array<ChildResult | null> = [];
    for (const amp of [false, true]) {
      if (!torch || (amp && !torch.cuda)) {
        torchRuns.push(null);
        continue;
      }
      const script = path.join(ROOT, 'bench', 'gpu', 'torch_gpu.py');
      const args = [script, '--arch', arch, ...common, '--classes', String(CLASSES), '--lr', String(LR), ...(amp ? ['--amp'] : [])];
      const t = await measure(torch.py, args, process.env, o, (l) => {
        const j = JSON.parse(l) as { images_per_second: number; ms_per_step: number; max_memory_reserved: number; params: number; last_loss: number; device: string };
        return { imagesPerSecond: j.images_per_second, msPerStep: j.ms_per_step, allocatorBytes: j.max_memory_reserved || NaN, params: j.params, lastLoss: j.last_loss, device: j.device };
      });
      torchRuns.push(t);
      console.log(`pytorch ${amp ? 'AMP ' : 'fp32'}:  ${t.ok ? `${t.ok.imagesPerSecond.toFixed(1)} img/s (${t.ok.msPerStep.toFixed(0)} ms/step), peak ${peak(t)}, ${t.ok.params} params, last loss ${t.ok.lastLoss.toFixed(3)} [${t.ok.device}]` : t.error}`);
      if (w.ok && t.ok && w.ok.params !== t.ok.params) console.log(`WARNING: parameter counts differ (granular ${w.ok.params}, PyTorch ${t.ok.params})`);
    }
    const [fp32, amp] = torchRuns;
    const memRatio = w.ok && fp32?.ok && Number.isFinite(fp32.ok.allocatorBytes) ? `${(w.ok.allocatorBytes / fp32.ok.allocatorBytes).toFixed(2)}×` : '—';
    rows.push(
      `| ${arch} | ${o.size} | ${o.batch} | ${speed(w)} | ${peak(w)} | ${fp32 ? speed(fp32) : '—'} | ${fp32 ? peak(fp32) : '—'} | ${amp ? speed(amp) : '—'} | ${amp ? peak(amp) : '—'} | ${ratio(w, fp32)} | ${ratio(w, amp)} | ${memRatio} |`,
    );
  }
  console.log(`\n== summary (markdown; webgpu device: ${device || 'unknown'}; PyTorch: ${torchNote}) ==\n${rows.join('\n')}`);
}

main().catch((e) => {
  process.stderr.write(`Error: ${(e as Error).message}\n${(e as Error).stack ?? ''}\n`);
  process.exit(1);
});
