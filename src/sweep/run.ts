import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { relativePaths, yamlErrorText } from '../config/load';
import { readRunFolder } from '../runs/run';
import * as rd from '../runs/rundir';
import { SWEEP_PID_ENV } from '../runs/watchdog';
import { UsageError } from '../util/errors';
import { ensureDir, readJson, writeJsonAtomic } from '../util/fsx';
import { fingerprint, planSweep, PlannedRun, resumeArgs, runArgs, SweepPlan } from './plan';
import { shellSplit } from '../util/shell';

/** The CLI shim every child run goes through (dist/src/sweep → bin/granular.js). */
const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'granular.js');

export type RunState = 'new' | 'completed' | 'failed' | 'interrupted' | 'crashed' | 'running';

export interface LoadedSweep {
  /** The sweep file, or null for a multirun from the command line (./multirun.ts). */
  file: string | null;
  /** What asked for the sweep, for messages: `sweep file 'x.yaml'`, or `the command line`. */
  where: string;
  /** A multirun's command line (`granular pretrain -m ...`), recorded in sweep.json; absent for a sweep file. */
  commandLine?: string[];
  plan: SweepPlan;
  /** The base config as given to child runs (relative to the working folder), or null. */
  base: string | null;
  /** runs/<sweep> relative to the working folder, with '/' separators. */
  runsDir: string;
}

/** Read and expand a sweep file; every error is a UsageError naming the entry. */
export function loadSweep(file: string, runsRoot: string, cwd = process.cwd()): LoadedSweep {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read sweep file '${file}': ${(e as NodeJS.ErrnoException).code ?? e}. Check the path.`);
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true, merge: true });
  if (doc.errors.length) throw new UsageError(`sweep file '${file}' ${yamlErrorText(doc.errors[0])}`);
  return sweepFromDoc(doc.toJS(), { file, where: `sweep file '${file}'`, dir: path.dirname(file), runsRoot, cwd });
}

/**
 * Expand a sweep document (a parsed sweep file, or the one a multirun stands
 * for: ./multirun.ts) with the sweep planner. `dir`: the folder its relative
 * paths (base:, path-valued keys, from_run:) are read against — the sweep
 * file's, or the working folder for the command line. Errors: UsageError.
 */
export function sweepFromDoc(doc: unknown, o: { file: string | null; where: string; dir: string; runsRoot: string; cwd?: string; commandLine?: string[] }): LoadedSweep {
  const cwd = o.cwd ?? process.cwd();
  const where = o.where;
  // One rule for paths (README "Names, folders and paths: the rules"): a path is relative to the file that says it.
  // A relative path key in set:/grid:/runs: is the sweep file's, like base:; it is passed to runs as seen
  // from the working folder (relative inside it, so the tree can move; absolute outside it).
  const fromFile = (p: string) => {
    const abs = path.resolve(o.dir, p);
    const rel = path.relative(cwd, abs);
    return rel === '' ? '.' : rel.startsWith('..') || path.isAbsolute(rel) ? posix(abs) : posix(rel);
  };
  const mapValue = (key: string, v: unknown): unknown => {
    if (typeof v !== 'string' || v === '' || !relativePaths(setAt(key, v)).length) return v;
    return key === 'train.level' ? `nodes:${fromFile(v.trim().slice('nodes:'.length).trim())}` : fromFile(v);
  };
  const plan = planSweep(doc, where, mapValue, fromFile);
  let base: string | null = null;
  if (plan.base) {
    const abs = path.resolve(o.dir, plan.base);
    if (!fs.existsSync(abs)) throw new UsageError(`${where}: base: '${plan.base}' does not exist (looked for ${abs}; the path is relative to ${o.file === null ? 'the working folder' : 'the sweep file'}).`);
    // Inside the tree: relative, so the tree can move; outside it: absolute, so it still can.
    const rel = path.relative(cwd, abs);
    base = rel.startsWith('..') || path.isAbsolute(rel) ? posix(abs) : posix(rel);
  }
  const runsDir = posix(path.relative(cwd, path.resolve(cwd, o.runsRoot, plan.name)));
  return { file: o.file, where, ...(o.commandLine ? { commandLine: o.commandLine } : {}), plan, base, runsDir };
}

const posix = (p: string) => p.split(path.sep).join('/');

/** How to give a sweep that clashes with a run tree another home. */
const renameHint = (s: LoadedSweep) => (s.file === null ? 'Give this multirun another --sweep-name, or use --runs-root.' : 'Rename this sweep (name:) or use --runs-root.');

/** `{a: {b: v}}` for the dotted key `a.b`. */
function setAt(key: string, v: unknown): Record<string, unknown> {
  return key.split('.').reduceRight<unknown>((acc, k) => ({ [k]: acc }), v) as Record<string, unknown>;
}

export function runState(dir: string): RunState {
  const run = readRunFolder(dir);
  if (run.configText === null) return 'new';
  // Liveness is the heartbeat of run.lock.d (runlock.ts), never the PID in run.lock: a run killed a moment ago counts as running until it goes stale.
  if (rd.lockStatus(dir).live) return 'running';
  const s = run.summary;
  if (!s) return 'crashed';
  if (s.status === 'completed' || s.status === 'failed' || s.status === 'interrupted') return s.status;
  return 'crashed';
}

interface SweepRecord {
  name: string;
  /** The sweep file, relative to runs/<sweep>/; for a multirun, the command line instead. */
  sweep_file?: string;
  command_line?: string[];
  runs: Record<string, { stage: string; command: string[] }>;
}

/**
 * The run tree must be this sweep's: sweep.json names the sweep, and an existing
 * run folder must have been started with this run's settings (command.txt).
 * Anything else would be skipped or resumed under the wrong name.
 */
export function checkOwnership(s: LoadedSweep, cwd = process.cwd()): void {
  const dir = path.resolve(cwd, s.runsDir);
  const recFile = path.join(dir, rd.FILES.sweep);
  if (fs.existsSync(recFile)) {
    const rec = readJson<SweepRecord>(recFile);
    if (rec.name !== s.plan.name) {
      throw new UsageError(`run folder '${s.runsDir}' belongs to another sweep ('${rec.name}', from ${rec.sweep_file ?? (rec.command_line ?? []).join(' ')}). ${renameHint(s)}`);
    }
  } else if (fs.existsSync(dir)) {
    const names = new Set(s.plan.runs.map((r) => r.name));
    const strangers = fs.readdirSync(dir).filter((f) => fs.existsSync(path.join(dir, f, rd.FILES.config)) && !names.has(f));
    if (strangers.length) {
      throw new UsageError(`run folder '${s.runsDir}' already holds runs that are not part of sweep '${s.plan.name}' (${strangers.slice(0, 3).join(', ')}${strangers.length > 3 ? ', ...' : ''}) and has no sweep.json. ${renameHint(s)}`);
    }
  }
  for (const r of s.plan.runs) {
    const cmdFile = path.join(dir, r.name, rd.FILES.command);
    if (!fs.existsSync(cmdFile)) continue;
    const had = fingerprint(shellSplit(fs.readFileSync(cmdFile, 'utf8').trim()));
    const want = fingerprint(runArgs(r, { base: s.base, runsDir: s.runsDir }));
    if (had !== want) {
      throw new UsageError(
        `run folder '${s.runsDir}/${r.name}' was started with other settings than this sweep asks for: ${fingerprintChanges(had, want, s.file === null ? 'on the command line' : 'in the sweep file')} ` +
          `(its command.txt: ${fs.readFileSync(cmdFile, 'utf8').trim()}). It belongs to another sweep or an older version of this one: ` +
          `move it away, or ${s.file === null ? 'give this multirun another --sweep-name' : 'give this sweep another name:'}.`,
      );
    }
  }
}

/**
 * What differs between two run fingerprints (plan.ts fingerprint), in
 * words: `train.epochs is 9 in the run folder, 2 in the sweep file; seed=1
 * only in the sweep file`.
 */
export function fingerprintChanges(had: string, want: string, asked = 'in the sweep file'): string {
  const a = JSON.parse(had) as { command: string; from: string; sets: string[] };
  const b = JSON.parse(want) as { command: string; from: string; sets: string[] };
  const byKey = (sets: string[]) => new Map(sets.map((x) => [x.slice(0, Math.max(0, x.indexOf('='))).trim(), x.slice(x.indexOf('=') + 1)]));
  const [ka, kb] = [byKey(a.sets), byKey(b.sets)];
  const out: string[] = [];
  if (a.command !== b.command) out.push(`the command is ${a.command} in the run folder, ${b.command} ${asked}`);
  if (a.from !== b.from) out.push(`--from is '${a.from}' in the run folder, '${b.from}' ${asked}`);
  for (const [k, v] of kb) {
    if (!ka.has(k)) out.push(`${k}=${v} only ${asked}`);
    else if (ka.get(k) !== v) out.push(`${k} is ${ka.get(k)} in the run folder, ${v} ${asked}`);
  }
  for (const [k, v] of ka) if (!kb.has(k)) out.push(`${k}=${v} only in the run folder`);
  return out.length ? out.join('; ') : 'the order of its settings differs';
}

export function writeSweepRecord(s: LoadedSweep, cwd = process.cwd()): void {
  const dir = path.resolve(cwd, s.runsDir);
  ensureDir(dir);
  const rec: SweepRecord = {
    name: s.plan.name,
    ...(s.file !== null ? { sweep_file: posix(path.relative(dir, path.resolve(cwd, s.file))) } : { command_line: s.commandLine ?? [] }),
    runs: Object.fromEntries(s.plan.runs.map((r) => [r.name, { stage: r.stage, command: ['granular', ...runArgs(r, { base: s.base, runsDir: s.runsDir })] }])),
  };
  writeJsonAtomic(path.join(dir, rd.FILES.sweep), rec);
}

/** What to do with each run now: the arguments to run, or why it is left alone. */
export interface Step {
  run: PlannedRun;
  state: RunState;
  args: string[] | null;
  note?: string;
}

export function steps(s: LoadedSweep, retry: boolean, cwd = process.cwd()): Step[] {
  return s.plan.runs.map((run) => {
    const state = runState(path.resolve(cwd, s.runsDir, run.name));
    switch (state) {
      case 'new':
        return { run, state, args: runArgs(run, { base: s.base, runsDir: s.runsDir }) };
      case 'crashed':
      case 'interrupted':
        return { run, state, args: resumeArgs(run, s.runsDir) };
      case 'failed':
        return retry ? { run, state, args: resumeArgs(run, s.runsDir) } : { run, state, args: null, note: 'failed before; --retry runs it again' };
      case 'completed':
        return { run, state, args: null, note: 'completed' };
      case 'running':
        return { run, state, args: null, note: 'running in another process (live run.lock)' };
    }
  });
}

export interface ExecOptions {
  jobs: number;
  /** Extra arguments for a child (--backend, --threads): the same for all, or per step. */
  childArgs: string[] | ((st: Step) => string[]);
  cwd?: string;
  log?: (line: string) => void;
}

export interface ExecResult {
  completed: string[];
  failed: string[];
  /** Failed runs that exited 2 (refused as bad usage, config or data; nothing written): --retry cannot help. */
  refused: string[];
  skipped: string[];
  blocked: string[];
  interrupted: string[];
  /** Runs not started because the sweep was interrupted. */
  notStarted: string[];
  signal: NodeJS.Signals | null;
}

/**
 * Run the steps with at most `jobs` children at once. A fine-tuning run starts
 * once its source has completed; if the source fails, it is blocked.
 */
export async function execute(s: LoadedSweep, todo: Step[], o: ExecOptions): Promise<ExecResult> {
  const cwd = o.cwd ?? process.cwd();
  const log = o.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const logDir = path.resolve(cwd, s.runsDir, 'logs');
  ensureDir(logDir);
  const res: ExecResult = { completed: [], failed: [], refused: [], skipped: [], blocked: [], interrupted: [], notStarted: [], signal: null };
  const status = new Map<string, RunState | 'pending' | 'active' | 'blocked' | 'adopted'>();
  // A run alive in another process (a sweep that was killed left it, or someone started it by
  // hand) is adopted: waited for by its lock, its dependents started when it completes.
  const adopted = todo.filter((t) => t.state === 'running');
  for (const st of todo) status.set(st.run.name, st.args ? 'pending' : st.state === 'running' ? 'adopted' : st.state);
  for (const st of todo) if (!st.args && st.state !== 'running') res.skipped.push(st.run.name);
  let total = todo.filter((t) => t.args).length;
  let started = 0;
  const children = new Set<ReturnType<typeof spawn>>();
  let stopping: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) return;
    stopping = sig;
    res.signal = sig;
    log(`sweep: ${sig} received; stopping the ${children.size} running run(s) (they stay resumable), starting no more`);
    for (const c of children) c.kill(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const runOne = (st: Step) =>
    new Promise<void>((resolve) => {
      const n = ++started;
      const t0 = Date.now();
      const logFile = path.join(logDir, `${st.run.name}.log`);
      const fd = fs.openSync(logFile, 'a');
      const args = [...st.args!, '--quiet', ...(typeof o.childArgs === 'function' ? o.childArgs(st) : o.childArgs)];
      fs.writeSync(fd, `$ granular ${args.join(' ')}\n`);
      log(`[${n}/${total}] ${st.state === 'new' ? 'start' : st.state === 'failed' ? 'retry' : 'resume'} ${st.run.name}`);
      // Own process group: a terminal's Ctrl-C reaches children only through us, once.
      // The child stops (resumably) if this process dies without passing a signal on (SIGKILL).
      const child = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', fd, fd], detached: true, env: { ...process.env, [SWEEP_PID_ENV]: String(process.pid) } });
      children.add(child);
      child.on('exit', (code, signal) => {
        children.delete(child);
        fs.closeSync(fd);
        const dir = path.resolve(cwd, s.runsDir, st.run.name);
        const summary = readRunFolder(dir).summary;
        const secs = ((Date.now() - t0) / 1000).toFixed(1);
        const acc = typeof summary?.test_acc === 'number' ? ` test_acc=${(summary.test_acc as number).toFixed(4)}` : '';
        if (code === 0 && summary?.status === 'completed') {
          status.set(st.run.name, 'completed');
          res.completed.push(st.run.name);
          log(`[${n}/${total}] completed ${st.run.name} (${secs} s)${acc}`);
        } else if (code === 130 || code === 143 || signal) {
          status.set(st.run.name, 'interrupted');
          res.interrupted.push(st.run.name);
          log(`[${n}/${total}] interrupted ${st.run.name}; the next sweep resumes it`);
        } else {
          status.set(st.run.name, 'failed');
          res.failed.push(st.run.name);
          if (code === 2) res.refused.push(st.run.name);
          const why = summary?.error && code !== 2 ? String(summary.error) : lastLines(logFile, 3);
          log(`[${n}/${total}] ${code === 2 ? 'REFUSED' : 'FAILED'} ${st.run.name} (exit ${code}${code === 2 ? ': bad usage, config or data' : ''}): ${why}\n    log: ${posix(path.relative(cwd, logFile))}`);
        }
        resolve();
      });
    });

  const queue = todo.filter((t) => t.args);
  const active = new Set<Promise<void>>();
  const watching = new Set<Promise<void>>();
  const adopt = (st: Step) => {
    const dir = path.resolve(cwd, s.runsDir, st.run.name);
    const owner = rd.lockStatus(dir).holder;
    log(`waiting for ${st.run.name}: it is running in ${owner} (run.lock); runs that start from it wait too`);
    const p = new Promise<void>((resolve) => {
      const tick = () => {
        if (stopping) return resolve();
        const state = runState(dir);
        if (state === 'running') {
          setTimeout(tick, 500);
          return;
        }
        if (state === 'completed') {
          status.set(st.run.name, 'completed');
          res.completed.push(st.run.name);
          log(`adopted ${st.run.name}: completed`);
        } else if (state === 'interrupted' || state === 'crashed') {
          // It stopped (e.g. its sweep was killed): continue it here.
          status.set(st.run.name, 'pending');
          queue.push({ run: st.run, state, args: resumeArgs(st.run, s.runsDir) });
          total++;
          log(`adopted ${st.run.name}: ${state}; resuming it`);
        } else {
          status.set(st.run.name, 'failed');
          res.failed.push(st.run.name);
          log(`adopted ${st.run.name}: ${state} (exit code of ${owner} unknown); see its summary.json`);
        }
        resolve();
      };
      tick();
    }).then(() => {
      watching.delete(p);
    });
    watching.add(p);
  };
  for (const st of adopted) adopt(st);
  const sourceState = (st: Step) => (st.run.from ? status.get(st.run.from) : 'completed');
  while (queue.length || active.size || watching.size) {
    if (!stopping) {
      // Block runs whose source can no longer complete in this sweep.
      for (let i = queue.length - 1; i >= 0; i--) {
        const src = sourceState(queue[i]);
        if (src === 'failed' || src === 'blocked' || src === 'running' || src === 'interrupted' || src === 'crashed' || src === 'new') {
          status.set(queue[i].run.name, 'blocked');
          res.blocked.push(queue[i].run.name);
          log(`blocked ${queue[i].run.name}: its source ${queue[i].run.from} is ${src}`);
          queue.splice(i, 1);
        }
      }
      while (active.size < o.jobs) {
        const i = queue.findIndex((st) => sourceState(st) === 'completed');
        if (i < 0) break;
        const [st] = queue.splice(i, 1);
        status.set(st.run.name, 'active');
        const p = runOne(st).then(() => {
          active.delete(p);
        });
        active.add(p);
      }
    }
    if (!active.size && !watching.size) break;
    await Promise.race([...active, ...watching]);
  }
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  res.notStarted = queue.map((st) => st.run.name);
  res.blocked.reverse();
  return res;
}

function lastLines(file: string, n: number): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-n).join(' | ');
  } catch {
    return '(no log)';
  }
}

