/**
 * Scale benchmark (`npm run bench:scale`): imagefolder datasets of 5k, 50k and
 * 500k JPEGs at 64 px, and for each, side by side in one run:
 * - granular, first run (decodes every image into the record cache, then
 *   trains cnn-small for 300 steps drawn across the whole training set) and
 *   second run on the unchanged data (catalogue and records reused);
 * - PyTorch: torchvision ImageFolder + ToTensor + DataLoader (num_workers =
 *   cores), the same cnn-small, 300 steps (bench/torch_scale.py).
 * Printed per side: peak RSS (the process; PyTorch's DataLoader workers
 * listed apart), first-decode img/s, train img/s, time to first step.
 *
 * Datasets are generated once under datasets/bench/ (gitignored) and reused:
 * seeded noise over a class-dependent pattern (stripes whose angle, frequency
 * and colour depend on the class), 100 classes in 10 groups, 2 % held out as
 * test/. The record cache goes to datasets/bench/cache.
 *
 *   npm run bench:scale                      # 5k and 50k
 *   npm run bench:scale -- --sizes 5k,50k,500k --steps 300
 *   npm run bench:scale -- --sizes 5k --no-torch --threads 2
 *   npm run bench:scale -- --sizes 500k --warm-only   # only a run on the existing record cache
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';

const REPO = path.resolve(__dirname, '..', '..');
const CLI = path.join(REPO, 'bin', 'granular.js');
const BENCH = path.join(REPO, 'datasets', 'bench');
const SIDE = 64;
const CLASSES = 100;
const GENERATOR = 1;

interface Options {
  sizes: number[];
  steps: number;
  batch: number;
  threads: number;
  torch: boolean;
  channels: 1 | 3;
  /** Only make the datasets (once), run nothing. */
  generateOnly: boolean;
  /** Only the second run, on the record cache an earlier bench left (no first run, no PyTorch). */
  warmOnly: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { sizes: [5_000, 50_000], steps: 300, batch: 64, threads: 1, torch: true, channels: 3, generateOnly: false, warmOnly: false };
  const num = (s: string) => Math.round(Number(s.replace(/k$/i, '')) * (/k$/i.test(s) ? 1000 : 1));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--sizes') o.sizes = argv[++i].split(',').map(num);
    else if (a === '--steps') o.steps = Number(argv[++i]);
    else if (a === '--batch') o.batch = Number(argv[++i]);
    else if (a === '--threads') o.threads = Number(argv[++i]);
    else if (a === '--channels') o.channels = Number(argv[++i]) === 1 ? 1 : 3;
    else if (a === '--no-torch') o.torch = false;
    else if (a === '--generate-only') o.generateOnly = true;
    else if (a === '--warm-only') o.warmOnly = true;
    else throw new Error(`bench:scale: unknown option ${a} (see bench/scale.ts)`);
  }
  return o;
}

/** sfc32-style 32-bit generator: fast enough for 12k noise bytes per image. */
function rng(seed: number): () => number {
  let a = seed ^ 0x9e3779b9, b = 0x243f6a88, c = 0xb7e15162, d = seed * 2654435761;
  return () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
}

/** Image i of class k: stripes (angle, frequency, colour by class) plus seeded noise. */
function pixels(k: number, i: number): Buffer {
  const r = rng(i * 7919 + k);
  const buf = Buffer.alloc(SIDE * SIDE * 3);
  const angle = (k % 10) * (Math.PI / 10);
  const freq = 0.15 + 0.05 * Math.floor(k / 10);
  const cx = Math.cos(angle) * freq;
  const cy = Math.sin(angle) * freq;
  const tint = [(k * 37) % 256, (k * 91) % 256, (k * 53) % 256];
  const phase = (r() % 628) / 100;
  for (let y = 0; y < SIDE; y++) {
    for (let x = 0; x < SIDE; x++) {
      const s = 0.5 + 0.5 * Math.sin(x * cx + y * cy + phase);
      const o = (y * SIDE + x) * 3;
      const n = r();
      for (let c = 0; c < 3; c++) buf[o + c] = Math.max(0, Math.min(255, Math.round(s * tint[c] + (1 - s) * 40 + ((n >>> (c * 8)) & 63) - 32)));
    }
  }
  return buf;
}

/** datasets/bench/folder-<n>: generated once (a marker file records it), then reused. */
async function dataset(n: number): Promise<string> {
  const root = path.join(BENCH, `folder-${n}`);
  const marker = path.join(root, '.complete');
  const want = JSON.stringify({ n, side: SIDE, classes: CLASSES, generator: GENERATOR });
  if (fs.existsSync(marker) && fs.readFileSync(marker, 'utf8') === want) return root;
  fs.rmSync(root, { recursive: true, force: true });
  const t0 = performance.now();
  fs.mkdirSync(root, { recursive: true });
  const rows = ['group,leaf'];
  for (let k = 0; k < CLASSES; k++) {
    const leaf = `c${String(k).padStart(3, '0')}`;
    rows.push(`g${Math.floor(k / 10)},${leaf}`);
    fs.mkdirSync(path.join(root, 'train', leaf), { recursive: true });
    fs.mkdirSync(path.join(root, 'test', leaf), { recursive: true });
  }
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), rows.join('\n') + '\n');
  let next = 0;
  let done = 0;
  let lastLog = performance.now();
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const k = i % CLASSES;
      const part = Math.floor(i / CLASSES) % 50 === 49 ? 'test' : 'train';
      const file = path.join(root, part, `c${String(k).padStart(3, '0')}`, `${String(i).padStart(7, '0')}.jpg`);
      await sharp(pixels(k, i), { raw: { width: SIDE, height: SIDE, channels: 3 } }).jpeg({ quality: 90 }).toFile(file);
      done++;
      if (performance.now() - lastLog > 15_000) {
        process.stdout.write(`  generated ${done} of ${n} (${Math.round(done / ((performance.now() - t0) / 1000))} img/s)\n`);
        lastLog = performance.now();
      }
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  fs.writeFileSync(marker, want);
  process.stdout.write(`generated ${n} ${SIDE}x${SIDE} JPEGs in ${((performance.now() - t0) / 1000).toFixed(0)} s (${root})\n`);
  return root;
}

interface Side {
  peakRssMb: number;
  /** PyTorch only: the largest DataLoader worker. */
  workerRssMb?: number;
  decodeImgPerSec: number | null;
  trainImgPerSec: number;
  firstStepSeconds: number;
  /** granular only: the part of firstStepSeconds spent evaluating the initial network (the epoch-0 row). */
  initialEvalSeconds?: number;
  /** granular only: the part of firstStepSeconds spent building the network. */
  modelBuildSeconds?: number;
  wallSeconds: number;
}

/** Run granular pretrain; peak RSS from a preload that reports process.resourceUsage() at exit. */
function granular(root: string, o: Options, label: string): Side & { decoded: number } {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), `granular-bench-scale-${label}-`));
  const rssFile = path.join(runDir, 'rss.json');
  fs.rmSync(runDir, { recursive: true });
  const sets = [
    'data.format=imagefolder', `data.root=${root}`, `data.cache_dir=${path.join(BENCH, 'cache')}`, `data.image_size=${SIDE}`, `data.channels=${o.channels}`,
    'data.val_fraction=0', 'data.test_size=1000', 'model.arch=cnn-small', `train.batch_size=${o.batch}`, 'train.epochs=1000', `train.max_steps=${o.steps}`,
    'train.lr=0.02', 'eval.dynamics_every=0', 'eval.every=1000',
  ];
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['--require', path.join(__dirname, 'rss-at-exit.js'), CLI, 'pretrain', ...sets.flatMap((s) => ['--set', s]), '--run-dir', runDir, '--quiet', '--threads', String(o.threads)], {
    encoding: 'utf8',
    env: { ...process.env, GRANULAR_RSS_FILE: rssFile },
    maxBuffer: 64 * 1024 * 1024,
  });
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`granular ${label} failed (exit ${r.status}):\n${r.stderr.slice(-3000)}`);
  const s = JSON.parse(fs.readFileSync(path.join(runDir, 'summary.json'), 'utf8'));
  const rss = JSON.parse(fs.readFileSync(rssFile, 'utf8')) as { maxRssKb: number };
  const store = lastDecode();
  fs.rmSync(runDir, { recursive: true, force: true });
  return {
    peakRssMb: rss.maxRssKb / 1024,
    decodeImgPerSec: store && store.images > 0 ? store.images / store.seconds : null,
    decoded: store?.images ?? 0,
    trainImgPerSec: s.train_images_per_second,
    firstStepSeconds: s.first_step_seconds,
    initialEvalSeconds: s.initial_eval_seconds,
    modelBuildSeconds: s.model_build_seconds,
    wallSeconds: wall,
  };
}

/** The record store's note of its latest decode (images, seconds), by modification time. */
function lastDecode(): { images: number; seconds: number } | null {
  const dir = path.join(BENCH, 'cache');
  const metas = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => path.join(dir, f));
  metas.sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  if (!metas.length) return null;
  const m = JSON.parse(fs.readFileSync(metas[0], 'utf8'));
  return m.last_decode ?? null;
}

function python(): string | null {
  for (const p of [process.env.GRANULAR_BENCH_PYTHON, 'python3', '/usr/bin/python3']) {
    if (!p) continue;
    const r = spawnSync(p, ['-c', 'import torch, torchvision'], { encoding: 'utf8' });
    if (r.status === 0) return p;
  }
  return null;
}

function torch(py: string, root: string, o: Options): Side {
  const t0 = performance.now();
  const r = spawnSync(py, [path.join(REPO, 'bench', 'torch_scale.py'), '--root', path.join(root, 'train'), '--steps', String(o.steps), '--batch', String(o.batch), '--threads', String(o.threads), '--workers', String(os.cpus().length), '--channels', String(o.channels)], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`torch_scale.py failed (exit ${r.status}):\n${r.stderr.slice(-3000)}`);
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
  return { peakRssMb: j.peak_rss_mb, workerRssMb: j.worker_rss_mb, decodeImgPerSec: j.decode_img_per_s, trainImgPerSec: j.train_img_per_s, firstStepSeconds: j.first_step_seconds, wallSeconds: (performance.now() - t0) / 1000 };
}

const f0 = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? '–' : Math.round(v).toLocaleString('en-US'));
const f1 = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(1));
const f2 = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(2));

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const py = o.torch ? python() : null;
  if (o.torch && !py) process.stdout.write('PyTorch with torchvision not found (apt-get install python3-torchvision, or pip install torch torchvision; or set GRANULAR_BENCH_PYTHON): granular only.\n');
  const free = fs.statfsSync(REPO);
  process.stdout.write(`bench:scale: ${o.sizes.join(', ')} images at ${SIDE}x${SIDE}x${o.channels}, cnn-small, batch ${o.batch}, ${o.steps} steps, ${o.threads} thread(s); ${os.cpus().length} cores, ${((free.bavail * free.bsize) / 1e9).toFixed(0)} GB free\n`);
  const rows: string[] = [];
  for (const n of o.sizes) {
    const root = await dataset(n);
    if (o.generateOnly) continue;
    // The first run on this data decodes it: a record store from an earlier bench run is removed first.
    if (!o.warmOnly) clearCacheFor(root);
    const cold = o.warmOnly ? null : granular(root, o, `${n}-cold`);
    const warm = granular(root, o, `${n}-warm`);
    const t = py && !o.warmOnly ? torch(py, root, o) : null;
    const line = (who: string, s: Side | null) =>
      s ? `| ${f0(n)} | ${who} | ${f0(s.peakRssMb)}${s.workerRssMb ? ` (+${f0(s.workerRssMb)} per worker)` : ''} | ${f0(s.decodeImgPerSec)} | ${f0(s.trainImgPerSec)} | ${f1(s.firstStepSeconds)}${s.initialEvalSeconds !== undefined ? ` (${f2(s.modelBuildSeconds)}, ${f1(s.initialEvalSeconds)})` : ''} |` : `| ${f0(n)} | ${who} | – | – | – | – |`;
    const mine = [line('granular, first run (decodes)', cold), line('granular, second run', { ...warm, decodeImgPerSec: null }), line('PyTorch ImageFolder + DataLoader', t)];
    rows.push(...(o.warmOnly ? mine.slice(1, 2) : mine));
    process.stdout.write(`${(o.warmOnly ? mine.slice(1, 2) : mine).join('\n')}\n`);
  }
  process.stdout.write('\n| images | who | peak RSS (MB) | first-decode img/s | train img/s | time to first step (s) (of which: model build, initial evaluation) |\n| --- | --- | --- | --- | --- | --- |\n');
  process.stdout.write(rows.join('\n') + '\n');
}

/** Remove the record store of `root` so the next run decodes from scratch. */
function clearCacheFor(root: string): void {
  const dir = path.join(BENCH, 'cache');
  if (!fs.existsSync(dir)) return;
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.json') || x.endsWith('.listing'))) {
    const m = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
    // The folder listings too: a first run lists every folder.
    if (f.endsWith('.listing') && m.root === root) fs.rmSync(path.join(dir, f), { force: true });
    if (m.identity !== `imagefolder:${root}`) continue;
    const base = f.slice(0, -'.json'.length);
    for (const g of fs.readdirSync(dir)) if (g.startsWith(`${base}.`)) fs.rmSync(path.join(dir, g), { force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exit(1);
});
