import { spawnSync, SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** The repository root (tests run from dist/test/). */
export const ROOT = path.resolve(__dirname, '..', '..');
export const CLI = path.join(ROOT, 'bin', 'granular.js');
export const QUICKSTART = path.join(ROOT, 'configs', 'quickstart.yaml');

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
export function cli(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): CliResult {
  const r: SpawnSyncReturns<string> = spawnSync(process.execPath, [CLI, ...args], {
    cwd: opts.cwd ?? ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
    timeout: 120_000,
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

/** Run a test body only when GRANULAR_SLOW=1 (CI sets it); the default suite stays fast. */
export const slow = process.env.GRANULAR_SLOW === '1' ? {} : { skip: 'slow: set GRANULAR_SLOW=1 to run' };
