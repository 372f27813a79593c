/**
 * `npm run bench`: training throughput of cnn-small and resnet8 on granular's
 * engine against the same networks in PyTorch on CPU at the same thread count,
 * a per-kernel profile of one training step, and a check that the optimized
 * wasm path trains to the same losses as the reference cpu backend.
 *
 *   npm run bench [-- --steps 20 --warmup 3 --repeat 3 --archs cnn-small,resnet8 --backend wasm --threads N
 *                     --no-torch --no-check --check-batch 4]
 *
 * GRANULAR_NATIVE=0 npm run bench measures without the native oneDNN kernels
 * (src/engine/native-kernels.ts), for comparison.
 *
 * PyTorch comes from the Debian package python3-torch (or pip install torch);
 * without it that column is skipped. The bench installs nothing itself.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { resolveConfig } from '../src/config/load';
import { initEngine, parseBackend, EngineInfo } from '../src/engine/backend';
import { buildNetwork } from '../src/models/archs';
import { Network } from '../src/models/network';
import { Objective, plainObjective } from '../src/models/objective';
import { blockLrScale } from '../src/train/finetune';
import { NamedOptimizer } from '../src/train/optimizer';
import { TrainableSet } from '../src/train/trainable';
import { READ_EVERY, StepLog } from '../src/train/step-log';
import { Rng } from '../src/util/rng';

const SHAPE: [number, number, number] = [32, 32, 3];
const SIZE = SHAPE[0] * SHAPE[1] * SHAPE[2];
const CLASSES = 10;
const BATCH = 64;
const LR = 0.01;
const CHECK_STEPS = 20;
const CHECK_TOLERANCE = 1e-3;
const PROFILE_TOP = 12;

interface Options {
  steps: number;
  warmup: number;
  /** Timing blocks of `steps` steps; the best one counts (a shared machine only ever slows a block down). */
  repeat: number;
  archs: string[];
  backend: string | undefined;
  threads: number | undefined;
  torch: boolean;
  check: boolean;
  checkBatch: number;
  /** Child mode: print the per-step losses of the fixed-seed check run as JSON and exit. */
  lossesOf: string | null;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { steps: 20, warmup: 3, repeat: 3, archs: ['cnn-small', 'resnet8'], backend: undefined, threads: undefined, torch: true, check: true, checkBatch: 4, lossesOf: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`bench: ${a} needs a value`);
      return v;
    };
    if (a === '--steps') o.steps = Number(value());
    else if (a === '--warmup') o.warmup = Number(value());
    else if (a === '--repeat') o.repeat = Number(value());
    else if (a === '--archs') o.archs = value().split(',');
    else if (a === '--backend') o.backend = value();
    else if (a === '--threads') o.threads = Number(value());
    else if (a === '--no-torch') o.torch = false;
    else if (a === '--no-check') o.check = false;
    else if (a === '--check-batch') o.checkBatch = Number(value());
    else if (a === '--losses-of') o.lossesOf = value();
    else throw new Error(`bench: unknown option ${a} (see the comment at the top of bench/run.ts)`);
  }
  o.threads ??= process.env.GRANULAR_THREADS ? Number(process.env.GRANULAR_THREADS) : undefined;
  return o;
}

function network(arch: string, seed = 0): Network {
  const cfg = resolveConfig([{ seed, model: { arch }, data: { image_size: SHAPE[0], channels: SHAPE[2] } }], 'the bench config');
  return buildNetwork(cfg, SHAPE, CLASSES);
}

interface Batch {
  x: Float32Array;
  y: Int32Array;
}

function randomBatches(count: number, batch: number, seed: number): Batch[] {
  const rng = new Rng(seed);
  return Array.from({ length: count }, () => ({
    x: Float32Array.from({ length: batch * SIZE }, () => rng.normal()),
    y: Int32Array.from({ length: batch }, () => rng.int(CLASSES)),
  }));
}

/**
 * Training steps as src/train/loop.ts takes them: TrainableSet.step (the
 * loop's own step: forward with every block in training mode, softmax
 * cross-entropy, gradients, NamedOptimizer SGD with momentum 0.9) with
 * every block trainable. As in the loop, the batch goes up as a new tensor
 * each step and the steps' losses and hits are read back every READ_EVERY
 * steps (src/train/step-log.ts), and at the end of a timed block.
 */
class Trainer {
  private readonly trainable: TrainableSet;
  private readonly training: boolean[];
  readonly optimizer = new NamedOptimizer({ kind: 'sgd', momentum: 0.9, weightDecay: 0 });
  private readonly objective: Objective;

  constructor(readonly net: Network) {
    this.objective = plainObjective('xent', net.numClasses);
    this.training = net.blocks.map(() => true);
    this.trainable = new TrainableSet(net, this.training.slice(), blockLrScale(net.blocks.length, 1));
  }

  private readonly log = new StepLog();

  /** One step; its loss stays on the device until read(), which happens by itself every READ_EVERY steps. */
  async step(batch: Batch): Promise<void> {
    const x = tf.tensor(batch.x, [batch.y.length, ...SHAPE]);
    const y = tf.tensor1d(batch.y, 'int32');
    try {
      this.log.push({ b: batch.y.length, epoch: 1, step: 0, lr: LR }, this.trainable.step(x, y, this.training, this.objective, this.optimizer, LR));
    } finally {
      tf.dispose([x, y]);
    }
    if (this.log.length >= READ_EVERY) await this.read();
  }

  /** The losses of the steps not read yet, in step order. */
  async read(): Promise<number[]> {
    return (await this.log.read()).map((s) => s.loss);
  }

  dispose(): void {
    this.log.dispose();
    this.optimizer.dispose();
    this.net.dispose();
  }
}

const maxRssMb = () => process.resourceUsage().maxRSS / 1024;

interface TfjsResult {
  arch: string;
  params: number;
  imagesPerSecond: number;
  msPerStep: number;
  profile: string[];
  rssMb: number;
}

async function benchTfjs(arch: string, o: Options): Promise<TfjsResult> {
  const trainer = new Trainer(network(arch));
  const params = trainer.net.paramCount(trainer.net.blocks.map(() => true));
  const batches = randomBatches(2, BATCH, 1);
  for (let i = 0; i < o.warmup; i++) await trainer.step(batches[i % 2]);
  await trainer.read();
  let seconds = Infinity;
  for (let r = 0; r < o.repeat; r++) {
    const t0 = performance.now();
    for (let i = 0; i < o.steps; i++) await trainer.step(batches[i % 2]);
    await trainer.read();
    seconds = Math.min(seconds, (performance.now() - t0) / 1000);
  }
  const info = await tf.profile(async () => {
    await trainer.step(batches[0]);
    await trainer.read();
  });
  trainer.dispose();
  return { arch, params, imagesPerSecond: (o.steps * BATCH) / seconds, msPerStep: (1000 * seconds) / o.steps, profile: profileLines(info.kernels), rssMb: maxRssMb() };
}

/** Kernel time of one step by kernel name, largest first, then the slowest single calls. */
function profileLines(kernels: Awaited<ReturnType<typeof tf.profile>>['kernels']): string[] {
  const byName = new Map<string, { ms: number; calls: number }>();
  for (const k of kernels) {
    const e = byName.get(k.name) ?? { ms: 0, calls: 0 };
    e.ms += k.kernelTimeMs as number;
    e.calls++;
    byName.set(k.name, e);
  }
  const total = [...byName.values()].reduce((s, e) => s + e.ms, 0);
  const rows = [...byName.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const lines = [`kernel time in one step: ${total.toFixed(1)} ms over ${kernels.length} kernel calls`];
  for (const [name, e] of rows.slice(0, PROFILE_TOP)) {
    lines.push(`  ${name.padEnd(24)} ${e.ms.toFixed(1).padStart(7)} ms ${((100 * e.ms) / total).toFixed(1).padStart(5)}%  ${String(e.calls).padStart(4)} calls`);
  }
  const slowest = [...kernels].sort((a, b) => (b.kernelTimeMs as number) - (a.kernelTimeMs as number)).slice(0, 5);
  lines.push('  slowest calls:');
  for (const k of slowest) lines.push(`    ${(k.kernelTimeMs as number).toFixed(1).padStart(6)} ms  ${k.name} ${JSON.stringify(k.inputShapes)}`);
  return lines;
}

interface TorchResult {
  params: number;
  threads: number;
  images_per_second: number;
  ms_per_step: number;
  max_rss_mb: number;
  torch: string;
}

/**
 * The first interpreter that imports torch: $GRANULAR_BENCH_PYTHON, python3 on
 * PATH, then the system one (a pyenv or venv python3 on PATH does not see
 * Debian's python3-torch).
 */
function torchPython(): string | null {
  const candidates = [process.env.GRANULAR_BENCH_PYTHON, 'python3', '/usr/bin/python3'].filter((c): c is string => Boolean(c));
  for (const py of candidates) {
    const r = spawnSync(py, ['-c', 'import torch'], { encoding: 'utf8' });
    if (!r.error && r.status === 0) return py;
  }
  return null;
}

function benchTorch(arch: string, threads: number, o: Options): TorchResult | string {
  const py = torchPython();
  if (!py) return 'PyTorch not found: apt-get install python3-torch (Debian/Ubuntu) or pip install torch; GRANULAR_BENCH_PYTHON picks the interpreter';
  const script = path.join(__dirname, '..', '..', 'bench', 'torch_bench.py');
  const args = [script, '--arch', arch, '--threads', String(threads), '--steps', String(o.steps), '--warmup', String(o.warmup), '--repeat', String(o.repeat), '--batch', String(BATCH), '--classes', String(CLASSES), '--lr', String(LR)];
  const r = spawnSync(py, args, { encoding: 'utf8' });
  if (r.status !== 0) return `${py} bench/torch_bench.py failed: ${r.stderr.trim().split('\n').slice(-1)[0]}`;
  return JSON.parse(r.stdout.trim().split('\n').slice(-1)[0]) as TorchResult;
}

/** Per-step losses of a fixed-seed run (batch `batchSize`, new seeded batch each step) on the current backend. */
async function checkLosses(arch: string, batchSize: number): Promise<number[]> {
  const trainer = new Trainer(network(arch, 7));
  const batches = randomBatches(CHECK_STEPS, batchSize, 99);
  const losses: number[] = [];
  for (const b of batches) {
    await trainer.step(b);
    losses.push(...(await trainer.read()));
  }
  trainer.dispose();
  return losses;
}

/**
 * The same run on the reference cpu backend, in a child process so this
 * process keeps its engine. The cpu backend's convolutions are slow (seconds
 * per step at batch 16), hence the small check batch and children that run
 * side by side.
 */
function cpuLosses(arch: string, batchSize: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [__filename, '--losses-of', arch, '--backend', 'cpu', '--check-batch', String(batchSize)]);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`bench: the cpu reference run of ${arch} failed: ${err}`));
      else resolve(JSON.parse(out.trim().split('\n').slice(-1)[0]) as number[]);
    });
  });
}

function fmt(n: number, d = 1): string {
  return n.toFixed(d);
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const engine: EngineInfo = await initEngine(parseBackend(o.backend ?? (o.lossesOf ? 'cpu' : undefined)), o.threads);
  if (o.lossesOf) {
    process.stdout.write(JSON.stringify(await checkLosses(o.lossesOf, o.checkBatch)) + '\n');
    return;
  }
  const threads = engine.threads;
  console.log(`granular bench: backend ${engine.backend} (kernels: ${engine.native ?? engine.kernels}), ${threads} thread(s), ${engine.device}; batch ${BATCH}, 32x32x3, ${o.warmup} warmup + best of ${o.repeat} x ${o.steps} timed steps, SGD momentum 0.9`);
  const summary: string[] = [];
  for (const arch of o.archs) {
    const t = await benchTfjs(arch, o);
    console.log(`\n== ${arch} ==`);
    console.log(`granular (${engine.backend}): ${fmt(t.imagesPerSecond)} img/s (${fmt(t.msPerStep)} ms/step), ${t.params} params, peak RSS so far ${fmt(t.rssMb, 0)} MB`);
    let ratio = '';
    if (o.torch) {
      const p = benchTorch(arch, threads, o);
      if (typeof p === 'string') console.log(`pytorch: skipped (${p})`);
      else {
        const same = p.params === t.params ? 'equal' : `DIFFERENT (granular ${t.params})`;
        console.log(`pytorch ${p.torch} (${p.threads} thread(s)): ${fmt(p.images_per_second)} img/s (${fmt(p.ms_per_step)} ms/step), ${p.params} params (${same}), peak RSS ${fmt(p.max_rss_mb, 0)} MB`);
        ratio = ` = ${fmt(t.imagesPerSecond / p.images_per_second, 3)}x pytorch (${fmt(p.images_per_second)} img/s)`;
      }
    }
    console.log(`profile of one granular training step:\n${t.profile.join('\n')}`);
    summary.push(`${arch.padEnd(10)} ${fmt(t.imagesPerSecond).padStart(7)} img/s${ratio}`);
  }
  if (o.check && engine.backend !== 'cpu') {
    console.log(`\n== same numbers: ${CHECK_STEPS} fixed-seed steps, batch ${o.checkBatch}, ${engine.backend} vs cpu backend ==`);
    const references = o.archs.map((arch) => cpuLosses(arch, o.checkBatch));
    for (const [k, arch] of o.archs.entries()) {
      const ours = await checkLosses(arch, o.checkBatch);
      const ref = await references[k];
      const maxDiff = Math.max(...ours.map((l, i) => Math.abs(l - ref[i])));
      console.log(`${arch}: max |loss diff| ${maxDiff.toExponential(2)} over ${CHECK_STEPS} steps (${maxDiff <= CHECK_TOLERANCE ? 'ok' : 'FAIL'}, tolerance ${CHECK_TOLERANCE}); first/last loss ${fmt(ours[0], 4)}/${fmt(ours[CHECK_STEPS - 1], 4)}`);
      summary.push(`${arch.padEnd(10)} loss check max diff ${maxDiff.toExponential(2)}`);
    }
  }
  console.log(`\n== summary (${engine.backend}, ${engine.kernels} kernels, ${threads} thread(s)) ==\n${summary.join('\n')}\npeak RSS of this process: ${fmt(maxRssMb(), 0)} MB`);
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
