/**
 * `npm run bench:resnet`: ImageNet-size training on granular's engine against
 * PyTorch on CPU, side by side in one run: training img/s and peak RSS of
 * resnet18 (and resnet50, densenet121, vit-tiny/16, ...) at 112 and 224 px,
 * batch 32, on 1 and 2 threads. `npm run bench:archs` is the same for
 * vit-tiny/16 and densenet121 at 224 px. Each measurement is its own child process (granular and PyTorch
 * alternating), so each peak RSS is that configuration's alone.
 *
 *   npm run bench:resnet [-- --archs resnet18 --sizes 112,224 --batch 32 --threads 1,2
 *                           --steps 3 --warmup 1 --repeat 2 --backends native --no-torch]
 *
 * Backends: `native` (the default engine when the addon is built), `wasm`
 * (wasm with the native kernels), `wasm-only` (GRANULAR_NATIVE=0). Random
 * inputs, 1000 classes; the timed step and loop are bench/timing.ts's (the
 * training loop's step, SGD with momentum 0.9, losses read every
 * READ_EVERY steps, the fastest of `repeat` blocks of `steps` steps).
 * PyTorch: bench/torch_bench.py, as in `npm run bench`.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { resolveConfig } from '../src/config/load';
import { initEngine, parseBackend } from '../src/engine/backend';
import { buildNetwork } from '../src/models/archs';
import { READ_EVERY } from '../src/train/step-log';
import { timeTraining } from './timing';

const CLASSES = 1000;
const LR = 0.01;

interface Options {
  archs: string[];
  sizes: number[];
  batch: number;
  threads: number[];
  steps: number;
  warmup: number;
  repeat: number;
  backends: string[];
  torch: boolean;
  stem: 'imagenet' | 'cifar';
  /** Child mode: measure one configuration and print a JSON line. */
  child: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { archs: ['resnet18'], sizes: [112, 224], batch: 32, threads: [1, 2], steps: 3, warmup: 1, repeat: 2, backends: ['native'], torch: true, stem: 'imagenet', child: false };
  const list = (v: string) => v.split(',').filter(Boolean);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`bench:resnet: ${a} needs a value`);
      return v;
    };
    if (a === '--archs') o.archs = list(value());
    else if (a === '--sizes') o.sizes = list(value()).map(Number);
    else if (a === '--batch') o.batch = Number(value());
    else if (a === '--threads') o.threads = list(value()).map(Number);
    else if (a === '--steps') o.steps = Number(value());
    else if (a === '--warmup') o.warmup = Number(value());
    else if (a === '--repeat') o.repeat = Number(value());
    else if (a === '--backends') o.backends = list(value());
    else if (a === '--stem') o.stem = value() as Options['stem'];
    else if (a === '--no-torch') o.torch = false;
    else if (a === '--child') o.child = true;
    else throw new Error(`bench:resnet: unknown option ${a} (see the comment at the top of bench/resnet.ts)`);
  }
  return o;
}

interface Result {
  imagesPerSecond: number;
  msPerStep: number;
  maxRssMb: number;
  /** PyTorch only: its version and the BLAS library its process loaded. */
  torch?: string;
  blas?: string;
  params: number;
  engine?: string;
}

/** Child: one configuration on granular's engine. */
async function measureGranular(o: Options): Promise<Result> {
  const [arch, size, threads, backend] = [o.archs[0], o.sizes[0], o.threads[0], o.backends[0]];
  const engine = await initEngine(parseBackend(backend === 'wasm-only' ? 'wasm' : backend), threads);
  const shape: [number, number, number] = [size, size, 3];
  const stem = arch === 'resnet18' || arch === 'resnet50' ? o.stem : null;
  const cfg = resolveConfig([{ seed: 0, model: { arch, stem }, data: { image_size: size, channels: 3 } }], 'the bench config');
  const net = buildNetwork(cfg, shape, CLASSES);
  // Losses are read every READ_EVERY steps, as the training loop does (src/train/step-log.ts).
  const t = await timeTraining(net, { batch: o.batch, shape, classes: CLASSES, lr: LR, warmup: o.warmup, repeat: o.repeat, steps: o.steps, readEvery: READ_EVERY });
  return {
    imagesPerSecond: t.imagesPerSecond,
    msPerStep: t.msPerStep,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
    params: t.params,
    // The native kernels' description names the instruction set oneDNN uses (avx2, avx512_core): figures from two CPUs differ by it.
    engine: engine.native ? `${engine.backend}/${engine.native}` : `${engine.backend}/${engine.kernels}, ${engine.threads} thread(s)`,
  };
}

function runGranular(o: Options, arch: string, size: number, threads: number, backend: string): Result | string {
  const args = [__filename, '--child', '--archs', arch, '--sizes', String(size), '--threads', String(threads), '--backends', backend, '--batch', String(o.batch),
    '--steps', String(o.steps), '--warmup', String(o.warmup), '--repeat', String(o.repeat), '--stem', o.stem];
  const env = { ...process.env, ...(backend === 'wasm-only' ? { GRANULAR_NATIVE: '0' } : {}) };
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', env, maxBuffer: 1 << 24 });
  if (r.status !== 0) return `failed (exit ${r.status ?? r.signal}): ${(r.stderr || r.stdout).trim().split('\n').slice(-1)[0]}`;
  return JSON.parse(r.stdout.trim().split('\n').slice(-1)[0]) as Result;
}

/** The first interpreter that imports torch (as bench/run.ts picks it). */
function torchPython(): string | null {
  for (const py of [process.env.GRANULAR_BENCH_PYTHON, 'python3', '/usr/bin/python3'].filter((c): c is string => Boolean(c))) {
    const r = spawnSync(py, ['-c', 'import torch'], { encoding: 'utf8' });
    if (!r.error && r.status === 0) return py;
  }
  return null;
}

function runTorch(py: string, o: Options, arch: string, size: number, threads: number): Result | string {
  const script = path.join(__dirname, '..', '..', 'bench', 'torch_bench.py');
  const args = [script, '--arch', arch, '--threads', String(threads), '--steps', String(o.steps), '--warmup', String(o.warmup), '--repeat', String(o.repeat),
    '--batch', String(o.batch), '--classes', String(CLASSES), '--lr', String(LR), '--size', String(size), '--stem', o.stem];
  const r = spawnSync(py, args, { encoding: 'utf8' });
  if (r.status !== 0) return `failed (exit ${r.status ?? r.signal}): ${r.stderr.trim().split('\n').slice(-1)[0]}`;
  const j = JSON.parse(r.stdout.trim().split('\n').slice(-1)[0]) as { images_per_second: number; ms_per_step: number; max_rss_mb: number; params: number; torch?: string; blas?: string };
  return { imagesPerSecond: j.images_per_second, msPerStep: j.ms_per_step, maxRssMb: j.max_rss_mb, params: j.params, torch: j.torch, blas: j.blas };
}

const f0 = (n: number) => n.toFixed(0);
const f1 = (n: number) => n.toFixed(1);

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o.child) {
    process.stdout.write(JSON.stringify(await measureGranular(o)) + '\n');
    return;
  }
  const py = o.torch ? torchPython() : null;
  if (o.torch && !py) console.log('pytorch: skipped (not found: apt-get install python3-torch, or pip install torch; GRANULAR_BENCH_PYTHON picks the interpreter)');
  console.log(`granular bench:resnet: batch ${o.batch}, ${CLASSES} classes, ${o.stem} stem, SGD momentum 0.9; ${o.warmup} warmup + best of ${o.repeat} x ${o.steps} steps; each row granular then PyTorch, one process each`);
  const rows: string[] = [];
  rows.push('| network | px | threads | granular (engine) | img/s | peak RSS | PyTorch img/s | peak RSS | speed ratio | RSS ratio |');
  rows.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const arch of o.archs) {
    for (const size of o.sizes) {
      for (const threads of o.threads) {
        for (const backend of o.backends) {
          const g = runGranular(o, arch, size, threads, backend);
          const t = py ? runTorch(py, o, arch, size, threads) : 'skipped';
          const gs = typeof g === 'string' ? g : `${f1(g.imagesPerSecond)} img/s (${f0(g.msPerStep)} ms/step), peak RSS ${f0(g.maxRssMb)} MB, ${g.params} params [${g.engine}]`;
          const ts = typeof t === 'string' ? t : `${f1(t.imagesPerSecond)} img/s (${f0(t.msPerStep)} ms/step), peak RSS ${f0(t.maxRssMb)} MB, ${t.params} params, torch ${t.torch ?? '?'}, BLAS ${t.blas ?? '?'}`;
          console.log(`\n== ${arch} ${size}px batch ${o.batch}, ${threads} thread(s), ${backend} ==\ngranular: ${gs}\npytorch:  ${ts}`);
          if (typeof g !== 'string' && typeof t !== 'string') {
            if (g.params !== t.params) console.log(`WARNING: parameter counts differ (granular ${g.params}, PyTorch ${t.params})`);
            if (t.blas && /\/blas\/libblas\.so/.test(t.blas)) console.log('WARNING: PyTorch runs on the reference (netlib) BLAS, many times slower at matmul than OpenBLAS: not a fair peer (apt-get install libopenblas0-pthread)');
            console.log(`ratios: speed ${(g.imagesPerSecond / t.imagesPerSecond).toFixed(2)}x PyTorch, peak RSS ${(g.maxRssMb / t.maxRssMb).toFixed(2)}x PyTorch`);
          }
          const gi = typeof g === 'string' ? ['failed', '', ''] : [g.engine ?? backend, f1(g.imagesPerSecond), `${f0(g.maxRssMb)} MB`];
          const ti = typeof t === 'string' ? ['—', '—'] : [f1(t.imagesPerSecond), `${f0(t.maxRssMb)} MB`];
          const ratios = typeof g === 'string' || typeof t === 'string' ? ['—', '—'] : [`${(g.imagesPerSecond / t.imagesPerSecond).toFixed(2)}×`, `${(g.maxRssMb / t.maxRssMb).toFixed(2)}×`];
          rows.push(`| ${arch} | ${size} | ${threads} | ${gi.join(' | ')} | ${ti.join(' | ')} | ${ratios.join(' | ')} |`);
        }
      }
    }
  }
  console.log(`\n== summary (markdown) ==\n${rows.join('\n')}`);
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
