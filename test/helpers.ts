import { spawn, spawnSync, SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UsageError } from '../src/util/errors';

/** The repository root (tests run from dist/test/). */
export const ROOT = path.resolve(__dirname, '..', '..');
export const CLI = path.join(ROOT, 'bin', 'granular.js');
export const QUICKSTART = path.join(ROOT, 'configs', 'quickstart.yaml');

// A killed run's lock is taken over once its heartbeat is this old (src/util/lock-timing.ts;
// default 10 s, refreshed every second at this setting). Every test that kills a run and
// resumes it would otherwise sleep out the default 10 s; the tests of the stale rule itself
// set their own value. Children of the tests inherit it.
process.env.GRANULAR_LOCK_STALE_MS ??= '3000';

export function tmpDir(prefix = 'granular-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run the real CLI in a child process (from `cwd`, default a fresh temp folder). */
export function cli(args: string[], opts: { cwd?: string; env?: Record<string, string>; timeout?: number } = {}): CliResult {
  const r: SpawnSyncReturns<string> = spawnSync(process.execPath, [CLI, ...args], {
    cwd: opts.cwd ?? ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
    timeout: opts.timeout ?? 120_000,
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

export function readJson<T = Record<string, unknown>>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

export function metricRows(runDir: string): Array<Record<string, unknown>> {
  return fs
    .readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}

/** Settings that make a synthetic run take a second or two. */
export const TINY = [
  '--set', 'data.synthetic.train_samples=240',
  '--set', 'data.synthetic.test_samples=120',
  '--set', 'train.epochs=2',
];

/**
 * A skip reason for tests that need something the machine may lack, for
 * `test(name, { skip: skipUnless(missing) }, ...)`: false when `missing` is
 * null; else `missing`, unless the environment variable `required` is 1 (CI
 * sets GRANULAR_REQUIRE_WEBGPU=1 after installing Mesa's lavapipe), where it
 * throws, failing the test file with the reason instead of skipping it.
 */
export function skipUnless(missing: string | null, required = 'GRANULAR_REQUIRE_WEBGPU'): false | string {
  if (missing === null) return false;
  if (process.env[required] === '1') throw new Error(`${required}=1, but the tests here cannot run: ${missing}`);
  return missing;
}

/** Run a test body only when GRANULAR_SLOW=1 (CI sets it); the default suite stays fast. */
export const slow = process.env.GRANULAR_SLOW === '1' ? {} : { skip: 'slow: set GRANULAR_SLOW=1 to run' };

/** Tensors of a saved model by name (float32). */
export function modelWeights(runDir: string, folder = 'model'): Map<string, Float32Array> {
  const manifest = readJson<{ weightsManifest: Array<{ weights: Array<{ name: string; shape: number[] }> }> }>(path.join(runDir, folder, 'model.json'));
  const buf = fs.readFileSync(path.join(runDir, folder, 'weights.bin'));
  const out = new Map<string, Float32Array>();
  let off = 0;
  for (const w of manifest.weightsManifest[0].weights) {
    const n = w.shape.reduce((a, b) => a * b, 1);
    out.set(w.name, new Float32Array(buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + off + 4 * n)));
    off += 4 * n;
  }
  return out;
}

export const same = (a: Float32Array, b: Float32Array) => a.length === b.length && Buffer.compare(Buffer.from(a.buffer), Buffer.from(b.buffer)) === 0;

/** Summary values that must match between an interrupted-and-resumed run and an uninterrupted one. */
export function finalMetrics(runDir: string): Record<string, unknown> {
  const s = readJson(path.join(runDir, 'summary.json'));
  return Object.fromEntries(Object.entries(s).filter(([k]) => /^(test_|train_loss|train_acc|val_acc|align|step|epoch$)/.test(k)));
}

/** Start the CLI, wait until its checkpoint reaches `epoch`, then send `signal`. */
export function runUntil(args: string[], runDir: string, epoch: number, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', () => undefined);
    const state = path.join(runDir, 'checkpoint', 'state.json');
    const timer = setInterval(() => {
      try {
        if (JSON.parse(fs.readFileSync(state, 'utf8')).epoch >= epoch) {
          clearInterval(timer);
          child.kill(signal);
        }
      } catch {
        // not written yet (or being swapped in)
      }
    }, 5);
    child.on('exit', (code, sig) => {
      clearInterval(timer);
      resolve({ code, signal: sig, stdout });
    });
  });
}


/**
 * Start the CLI in the background; `onTick` is called every 5 ms with the child
 * until it returns true (then it stops being called). Resolves when the child exits.
 */
export function runWatching(args: string[], onTick: (child: ReturnType<typeof spawn>) => boolean, env: Record<string, string> = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setInterval(() => {
      try {
        if (onTick(child)) clearInterval(timer);
      } catch {
        // files not there yet
      }
    }, 5);
    child.on('exit', (code, signal) => {
      clearInterval(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export function checkpointState(runDir: string): { epoch: number; step: number } {
  return JSON.parse(fs.readFileSync(path.join(runDir, 'checkpoint', 'state.json'), 'utf8'));
}

/** Cases per fuzz property (CI runs the default). */
export const FUZZ_RUNS = Number(process.env.GRANULAR_FUZZ_RUNS ?? 2000);

/** A parser's outcome on bad input: a value, or a UsageError with a message (exit 2) - never another exception. */
export function cleanOutcome(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof UsageError)) throw new Error(`not a clean usage error: ${(e as Error)?.stack ?? e}`);
    if (e.message.length < 10 || /\n\s+at /.test(e.message)) throw new Error(`usage error without a readable message: ${e.message}`);
  }
}

/** max |actual - expected| over max(1, max |expected|): kernel results compared across backends. */
export function scaledError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`lengths differ: ${actual.length} vs ${expected.length}`);
  let maxDiff = 0;
  let scale = 1;
  for (let i = 0; i < expected.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return maxDiff / scale;
}

/** Conv padding as tfjs takes it: a mode or explicit [[0,0],[top,bottom],[left,right],[0,0]]. */
export type ConvPad = 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]];

/** One convolution geometry for the kernel tests (NHWC input, square kernel). */
export interface ConvCase {
  batch: number;
  height: number;
  width: number;
  inChannels: number;
  outChannels: number;
  kernel: number;
  strides: [number, number];
  pad: ConvPad;
}

export function describeConvCase(c: ConvCase): string {
  const pad = typeof c.pad === 'string' ? c.pad : JSON.stringify(c.pad);
  return `x[${c.batch},${c.height},${c.width},${c.inChannels}] k${c.kernel} out${c.outChannels} strides ${c.strides} pad ${pad}`;
}

/**
 * Two seeded random shapes per (stride 1/2, padding same/valid, kernel 1/3/5):
 * the first with batch 1, odd height and even width, the second with batch 2-3
 * and the reverse; sizes kernel + [0, sizeSpread), channels 1..maxIn / 1..maxOut.
 */
export function convGridCases(rng: { int(n: number): number }, o: { sizeSpread: number; maxIn: number; maxOut: number }): ConvCase[] {
  const cases: ConvCase[] = [];
  for (const stride of [1, 2]) {
    for (const pad of ['same', 'valid'] as const) {
      for (const kernel of [1, 3, 5]) {
        for (const variant of [0, 1]) {
          const base = kernel + rng.int(o.sizeSpread);
          const odd = base % 2 === 1 ? base : base + 1;
          const even = base % 2 === 0 ? base : base + 1;
          cases.push({
            batch: variant === 0 ? 1 : 2 + rng.int(2),
            height: variant === 0 ? odd : even,
            width: variant === 0 ? even : odd,
            inChannels: 1 + rng.int(o.maxIn),
            outChannels: 1 + rng.int(o.maxOut),
            kernel,
            strides: [stride, stride],
            pad,
          });
        }
      }
    }
  }
  return cases;
}

/** util-linux `script`, which runs a command in a pseudo-terminal; null where it is missing. */
const SCRIPT = ['/usr/bin/script', '/bin/script'].find((f) => fs.existsSync(f)) ?? null;
/** Skip a test that needs a pseudo-terminal where `script` is missing, saying so. */
export const needsPty = SCRIPT ? {} : { skip: 'needs util-linux script(1) to run the CLI in a pseudo-terminal' };

/**
 * Run the real CLI in a pseudo-terminal (`script -qec`), as a user at a
 * terminal sees it: stdout and stderr are TTYs, merged. `screen` is the text
 * left on the terminal (carriage returns and line clears applied, colours
 * dropped); `raw` is what was written.
 */
export function tty(args: string[], opts: { cwd?: string; env?: Record<string, string>; cols?: number; timeout?: number } = {}): { code: number | null; raw: string; screen: string } {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const command = `stty cols ${opts.cols ?? 120} rows 40; exec ${[process.execPath, CLI, ...args].map(q).join(' ')}`;
  const r = spawnSync(SCRIPT!, ['-qec', command, '/dev/null'], {
    cwd: opts.cwd ?? ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
    timeout: opts.timeout ?? 120_000,
  });
  return { code: r.status, raw: r.stdout, screen: terminalScreen(r.stdout) };
}

/** The lines a terminal shows after `raw`: \r returns to column 0, ESC[K/ESC[2K clear, ESC[nG moves; other escapes dropped. */
export function terminalScreen(raw: string): string {
  const lines: string[] = [];
  for (const physical of raw.split('\n')) {
    const buf: string[] = [];
    let col = 0;
    for (let i = 0; i < physical.length; i++) {
      const c = physical[i];
      if (c === '\r') {
        col = 0;
      } else if (c === '\x1b') {
        const m = /^\x1b\[([?\d;]*)([A-Za-z])/.exec(physical.slice(i));
        if (!m) continue;
        i += m[0].length - 1;
        if (m[2] === 'K') {
          if (m[1] === '2') buf.length = 0;
          else if (m[1] === '' || m[1] === '0') buf.length = Math.min(buf.length, col);
        } else if (m[2] === 'G') {
          col = Math.max(0, Number(m[1] || 1) - 1);
        }
      } else {
        while (buf.length < col) buf.push(' ');
        buf[col++] = c;
      }
    }
    lines.push(buf.join('').trimEnd());
  }
  return lines.join('\n');
}

/**
 * Tests across PID namespaces: `unshare --pid --fork --mount-proc` needs root
 * (or user namespaces) and util-linux. CI sets GRANULAR_REQUIRE_UNSHARE=1, so
 * there a machine that cannot do it fails the test file instead of skipping.
 */
export const needsUnshare = {
  skip: skipUnless(spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']).status === 0 ? null : 'needs `unshare --pid --fork --mount-proc` (root, util-linux)', 'GRANULAR_REQUIRE_UNSHARE'),
};

/**
 * A script that takes the run lock of folder argv[2] (src/runs/runlock.ts),
 * prints `HELD <ms> pid <pid>`, holds it argv[3] ms (default: until killed),
 * releases it and prints `RELEASED <ms>`; a refusal prints `REFUSED <message>`
 * and a takeover `NOTE <note>` before HELD. Returns the script's path.
 */
export function runLockScript(): string {
  const file = path.join(tmpDir(), 'hold-run-lock.js');
  const rundir = path.resolve(__dirname, '..', 'src', 'runs', 'rundir.js');
  fs.writeFileSync(
    file,
    `const rd = require(${JSON.stringify(rundir)});
const dir = process.argv[2];
let note;
try { note = rd.acquireLock(dir); } catch (e) { console.log('REFUSED ' + e.message); process.exit(3); }
if (note) console.log('NOTE ' + note);
console.log('HELD ' + Date.now() + ' pid ' + process.pid);
const ms = Number(process.argv[3] || 1e9);
setTimeout(() => { rd.releaseLock(dir); console.log('RELEASED ' + Date.now()); }, ms);
`,
  );
  return file;
}

/** Hold `dir`'s run lock in a child process (a live run, as far as anyone else can tell); resolves once it is held. */
export function holdRunLock(dir: string, env: Record<string, string> = {}): Promise<ReturnType<typeof spawn>> {
  const child = spawn(process.execPath, [runLockScript(), dir], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      if (/^HELD /m.test(out)) resolve(child);
    });
    child.on('exit', () => reject(new Error(`the lock holder exited: ${out}`)));
  });
}
