/**
 * A run as its folder describes it: the one reader of a run folder (used by
 * finetune --from, --resume, eval, report and sweep), run.json (RunMeta), the
 * records a new run writes before training (config.yaml, command.txt,
 * run.json, hierarchy.json, split.json), env.json with the same-engine check
 * for --resume, summary.json's assembly, and the saved model. Every file name
 * comes from FILES (runs/rundir.ts).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { configToYaml, parseConfigYaml } from '../config/load';
import { Config } from '../config/schema';
import { SplitRecord } from '../data/labels/split';
import { Dataset } from '../data/types';
import { asOutOfMemory, EngineIdentity, EngineInfo, engineMismatch, outOfMemoryAdvice } from '../engine';
import { Hierarchy, Level } from '../hierarchy/tree';
import { Network } from '../models/network';
import { UsageError } from '../util/errors';
import { readJson, writeFileAtomic, writeJsonAtomic } from '../util/fsx';
import { granularCommand, shellQuote } from '../util/shell';
import { missingPathHint } from '../util/paths';
import { readModelWeights, saveLayersModel } from './bundle';
import { FILES, readMetrics } from './rundir';
import { GitRecord } from './git';

/** The two kinds of training run. */
export type Stage = 'pretrain' | 'finetune';

/** run.json: what the run is, so --resume and reports need not parse argv. */
export interface RunMeta {
  run_id: string;
  stage: Stage;
  /** The source run's folder relative to this one (fine-tuning from a run), else null. */
  from: string | null;
  from_run_id: string | null;
  /** The source's trained level; '' for a pretraining run until its level is resolved, 'scratch' without a source. */
  pretrain_level: string;
  created: string;
}

/** A run folder as read from disk; missing or unreadable (torn, being written) files are null. */
export interface RunFolder {
  dir: string;
  /** config.yaml's text; null when the folder holds no run. */
  configText: string | null;
  /** run.json ({} when absent or unreadable). */
  meta: Partial<RunMeta> & Record<string, unknown>;
  /** summary.json; null while running, after a crash, or when torn. */
  summary: Record<string, unknown> | null;
}

const readText = (file: string): string | null => {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
};

const readObject = (file: string): Record<string, unknown> | null => {
  const text = readText(file);
  if (text === null) return null;
  try {
    const v = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v : null;
  } catch {
    return null; // being written right now, or torn: treated as absent
  }
};

/** The one reader of a run folder: config text, run.json and summary.json; never throws. */
export function readRunFolder(dir: string): RunFolder {
  return { dir, configText: readText(path.join(dir, FILES.config)), meta: readObject(path.join(dir, FILES.run)) ?? {}, summary: snakeCaseKeys(readObject(path.join(dir, FILES.summary))) };
}

/**
 * summary.json keys are snake_case; runs written before that have a few
 * camelCase ones (`dynamicsSeconds`). Both names stay readable: each camelCase
 * key gains its snake_case twin.
 */
export function snakeCaseKeys(rec: Record<string, unknown> | null): Record<string, unknown> | null {
  if (!rec) return rec;
  const out = { ...rec };
  for (const [k, v] of Object.entries(rec)) {
    // Only plain identifiers: a qualifier (`test_acc@Genus`) is a name, not a spelling.
    if (!/^[a-z][A-Za-z0-9]*$/.test(k)) continue;
    const snake = k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase();
    if (snake !== k && !(snake in out)) out[snake] = v;
  }
  return out;
}

/** A finished run to start from: its folder, resolved config, run.json and summary. */
export interface SourceRun {
  dir: string;
  cfg: Config;
  meta: RunMeta;
  summary: Record<string, unknown>;
}

/**
 * A finished run to fine-tune from (`--from`) or evaluate, or a UsageError
 * saying why it is not one (missing, no config.yaml, not completed, no saved
 * model). `what` names the argument in messages (`--from 'x'`, `RUN_DIR 'x'`),
 * `use` says what to give instead.
 */
export function readSourceRun(dir: string, what = `--from '${dir}'`, use = "Give the folder of a finished 'granular pretrain' run."): SourceRun {
  if (!fs.existsSync(dir)) throw new UsageError(`${what} does not exist. ${missingPathHint(dir)} ${use}`.replace(/\s+/g, ' '));
  if (!fs.statSync(dir).isDirectory()) throw new UsageError(`${what} is a file, not a run folder. ${use}`);
  const run = readRunFolder(dir);
  const cfgFile = path.join(dir, FILES.config);
  if (run.configText === null) throw new UsageError(`${what} is not a run folder (no ${FILES.config}). ${use}`);
  const summary = run.summary;
  if (!summary || summary.status !== 'completed') {
    const stage = typeof run.meta.stage === 'string' ? run.meta.stage : 'pretrain';
    throw new UsageError(
      `${what} is not a finished run (status: ${summary ? String(summary.status) : `no ${FILES.summary}, still running or crashed`}). ` +
        `Resume it with '${granularCommand()} ${stage} --resume ${shellQuote(dir)}' or pick a completed run.`,
    );
  }
  if (!fs.existsSync(path.join(dir, FILES.model, 'model.json'))) throw new UsageError(`${what} has no ${FILES.model}/model.json; the run did not save its network.`);
  const cfg = parseConfigYaml(run.configText, cfgFile);
  return { dir, cfg, meta: run.meta as RunMeta, summary };
}

/** split.json of a run: example ids of each part (throws if absent: a run writes it before training). */
export function readSplitRecord(dir: string): SplitRecord {
  return readJson(path.join(dir, FILES.split));
}

/** run.json of a new run in `runDir`; `pretrain_level` of a pretraining run is filled once its level is resolved. */
export function newRunMeta(runDir: string, stage: Stage, source: SourceRun | null): RunMeta {
  return {
    run_id: `${path.basename(runDir)}-${process.pid.toString(36)}${Date.now().toString(36)}`,
    stage,
    from: null,
    from_run_id: source?.meta.run_id ?? null,
    pretrain_level: stage === 'pretrain' ? '' : source ? String(source.summary.level) : 'scratch',
    created: new Date().toISOString(),
  };
}

/** hierarchy.json: every level (and the trained one) with its classes as paths and each leaf's class. */
export function hierarchyRecord(h: Hierarchy, level: Level, relabel?: Record<string, unknown>): Record<string, unknown> {
  const levels = h.levels();
  return {
    root: h.root,
    max_depth: h.maxDepth,
    classes: h.classes.map((c) => h.path(c)),
    trained_level: level.name,
    levels: [...levels, ...(levels.some((l) => l.name === level.name) ? [] : [level])].map((l) => ({
      name: l.name,
      classes: l.classes.map((c) => h.path(c)),
      class_of: Array.from(l.classOf),
    })),
    dag: h.dag ? { nodes_with_several_parents: h.dag.multiParentNodes, chosen_parent: h.dag.chosenParent } : null,
    // How data.relabel derived the classes when that needs recording (cluster:K: the run, level, K, seed, cluster sizes).
    ...(relabel ? { relabel } : {}),
  };
}

/** The records a new run writes before training: config.yaml, command.txt, run.json, hierarchy.json, split.json, and an empty metrics.jsonl. */
export function writeRunRecords(runDir: string, r: { cfg: Config; meta: RunMeta; argv: string[]; hierarchy: Hierarchy; level: Level; relabel?: Record<string, unknown>; split: Record<string, unknown>; notes?: string[] }): void {
  const notes = r.notes?.length ? `\n${r.notes.join('\n')}` : '';
  writeFileAtomic(path.join(runDir, FILES.config), configToYaml(r.cfg, `resolved config of this ${r.meta.stage} run, written before training\n${r.meta.run_id}${notes}`));
  writeFileAtomic(path.join(runDir, FILES.command), r.argv.map(shellQuote).join(' ') + '\n');
  writeJsonAtomic(path.join(runDir, FILES.run), r.meta);
  writeJsonAtomic(path.join(runDir, FILES.hierarchy), hierarchyRecord(r.hierarchy, r.level, r.relabel));
  writeJsonAtomic(path.join(runDir, FILES.split), r.split);
  // metrics.jsonl exists from here on (empty until the epoch-0 row), so `tail -f` can follow a run from its start.
  fs.closeSync(fs.openSync(path.join(runDir, FILES.metrics), 'a'));
}

/** env.json: the engine, the machine, and the blocks with which of them are frozen. */
export function envRecord(engine: EngineInfo, net: Network, frozen: number, prefixCached: boolean, git: GitRecord): Record<string, unknown> {
  return {
    backend: engine.backend,
    backend_requested: engine.requested,
    backend_fallbacks: engine.fallbacks,
    threads: engine.threads,
    kernels: engine.kernels,
    ...(engine.native ? { native_kernels: engine.native } : {}),
    device: engine.device,
    ...(engine.adapter ? { adapter: engine.adapter } : {}),
    capabilities: engine.capabilities,
    versions: engine.versions,
    platform: `${os.platform()} ${os.arch()}`,
    hostname: os.hostname(),
    pid: process.pid,
    start_time: new Date().toISOString(),
    blocks: net.blocks.map((b, i) => ({ name: b.name, frozen: i < frozen, layers: b.layers.map((l) => l.name) })),
    frozen_blocks: frozen,
    prefix_cached: prefixCached,
    // The code that ran: granular's commit and whether it had uncommitted edits (and the study's repository, if another).
    ...git,
  };
}

/**
 * Bit-identical resume is promised for the same engine only (backend, kernel
 * set, thread count, and GPU adapter where one computes): the native oneDNN
 * kernels and the wasm ones agree to ~1e-6, not to the bit, and so do two
 * GPUs. Throws UsageError unless `force` (then warns).
 */
export function checkSameEngine(runDir: string, engine: EngineInfo, force: boolean): void {
  const envFile = path.join(runDir, FILES.env);
  if (!fs.existsSync(envFile)) return;
  const differs = engineMismatch(readJson<EngineIdentity>(envFile), engine);
  if (!differs) return;
  const what = `run '${runDir}' was ${differs.what}`;
  if (!force) throw new UsageError(`${what}. Resume with ${differs.resume}, or add --force to continue anyway (the result is then no longer bit-identical to an uninterrupted run).`);
  process.stderr.write(`granular: warning: ${what}; continuing because of --force, so bit-identity with an uninterrupted run is not promised\n`);
}

/** The keys every summary.json of a training run starts with (DESIGN.md "summary.json"). */
export function summaryBase(r: { meta: RunMeta; cfg: Config; level: Level; frozenBlocks: number; engine: EngineInfo; data: Dataset; flipped: number }): Record<string, unknown> {
  return {
    run_id: r.meta.run_id,
    stage: r.meta.stage,
    level: r.level.name,
    level_spec: r.cfg.train.level,
    num_classes: r.level.classes.length,
    pretrain_level: r.meta.pretrain_level,
    from: r.meta.from,
    from_run_id: r.meta.from_run_id,
    frozen_blocks: r.frozenBlocks,
    backend: r.engine.backend,
    threads: r.engine.threads,
    skipped_images: r.data.skipped,
    ...(r.data.duplicates ? { duplicate_test_images: r.data.duplicates.test_in_train + r.data.duplicates.test_label_conflicts, duplicate_test_images_dropped: r.data.duplicates.dropped } : {}),
    ...(r.data.sourceOverlap ? { source_overlap: r.data.sourceOverlap } : {}),
    label_noise_flipped: r.flipped,
  };
}

/** summary.json of a run that trained to its last epoch: `final` holds the last epoch and dynamics rows' metrics. */
export function completedSummary(base: Record<string, unknown>, final: Record<string, number>, epochs: number, wallSeconds: number, trainImagesPerSecond: number): Record<string, unknown> {
  return { status: 'completed', ...base, ...final, epochs, wall_seconds: wallSeconds, train_images_per_second: trainImagesPerSecond };
}

/** summary.json of a run stopped by a signal at a step boundary, with the command that resumes it. */
export function interruptedSummary(base: Record<string, unknown>, runDir: string, signal: NodeJS.Signals | null, wallSeconds: number): Record<string, unknown> {
  return { status: 'interrupted', ...base, signal, epochs_trained: epochsFinished(runDir), wall_seconds: wallSeconds, resume: resumeCommand(base, runDir) };
}

/** Epochs a stopped run finished: the highest epoch of metrics.jsonl's epoch rows (0 before the first ended). */
function epochsFinished(runDir: string): number | null {
  let n = 0;
  try {
    for (const r of readMetrics(runDir)) if (r.kind === 'epoch' && typeof r.epoch === 'number') n = Math.max(n, r.epoch);
  } catch {
    return null; // unreadable (the error being reported may be that very folder's): unknown
  }
  return n;
}

/** The command that continues a run: on its backend, since a resume on another is refused (checkSameEngine). */
function resumeCommand(base: Record<string, unknown>, runDir: string): string {
  return `${granularCommand()} ${base.stage} --resume ${shellQuote(path.resolve(runDir))} --backend ${base.backend}`;
}

/** summary.json of a failed run: the error explained (what happened, what to do), and the stack for bugs. */
export function failedSummary(base: Record<string, unknown>, err: Error, runDir: string, cfg: Config, wallSeconds: number, expected: boolean): Record<string, unknown> {
  const summary: Record<string, unknown> = { status: 'failed', ...base, error: explainFailure(err, runDir, base.stage as Stage, cfg), error_type: err.name, epochs_trained: epochsFinished(runDir), wall_seconds: wallSeconds };
  // An error that left the last checkpoint valid (a lost GPU device): the run continues with --resume.
  if ((err as { resumable?: boolean }).resumable === true) Object.assign(summary, { resumable: true, resume: resumeCommand(base, runDir) });
  if (!expected) summary.stack = err.stack;
  return summary;
}

/** Turn resource errors into messages that say what happened and what to do. */
function explainFailure(err: Error, runDir: string, stage: Stage, cfg: Config): string {
  const code = (err as NodeJS.ErrnoException).code;
  const resume = `then continue with '${granularCommand()} ${stage} --resume ${shellQuote(runDir)}' (the last checkpoint is intact)`;
  if (code === 'ENOSPC') return `the disk is full (ENOSPC) while writing in '${runDir}': ${err.message}. Free space, ${resume}.`;
  if ((err as { resumable?: boolean }).resumable === true) return `${err.message}. Fix the cause, ${resume}.`;
  if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') return `cannot write in '${runDir}' (${code}): ${err.message}. Make the folder writable, ${resume}.`;
  const oom = asOutOfMemory(err);
  if (oom) return outOfMemoryAdvice(oom, { batchSize: cfg.train.batch_size, imageSize: cfg.data.image_size });
  if (/out of memory|Memory\.grow|Array buffer allocation failed|Aborted\(OOM\)|heap out of memory/i.test(err.message)) {
    return `ran out of memory with train.batch_size=${cfg.train.batch_size} (${err.message.split('\n')[0]}). Lower train.batch_size (e.g. --set train.batch_size=${Math.max(1, Math.floor(cfg.train.batch_size / 2))}) or model.width, then start a new run.`;
  }
  return err.message;
}

/** The trained network as RUN_DIR/model (tfjs layers format), written beside and swapped in. */
export async function saveModel(net: Network, runDir: string, name: string = FILES.model): Promise<void> {
  const dir = path.join(runDir, name);
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  await saveLayersModel(net.layersModel(), tmp);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
}

/**
 * Saved weights (by `<layer>/<weight>` name) into `net`. `head`: true loads
 * every head under its own name; false keeps every head as initialised; a
 * string is the saved prefix whose weights go into the primary head (`head`,
 * or `head_<level>` of a multi-level source; finetune.head keep/coarsen),
 * other heads of `net` staying as initialised. Throws UsageError naming `dir`
 * for a missing weight or a shape that differs (another architecture, image
 * size or channel count).
 */
export function assignWeights(net: Network, saved: ReadonlyMap<string, tf.Tensor>, dir: string, head: boolean | string): void {
  for (const v of net.variables()) {
    let name = v.name;
    if (v.block < 0 && head !== true) {
      if (head === false || !name.startsWith('head/')) continue;
      name = `${head}/${name.slice('head/'.length)}`;
    }
    const w = saved.get(name);
    if (!w) throw new UsageError(`the pretrained network in '${dir}' has no weight '${name}'; it was saved by a different architecture.`);
    if (w.shape.join('x') !== v.variable.shape.join('x')) {
      throw new UsageError(`weight '${name}' of '${dir}' has shape [${w.shape}] but this run needs [${v.variable.shape}] (different data.image_size or data.channels?).`);
    }
    v.variable.assign(w);
  }
}

/**
 * A run's saved network, head included, into `net` (errors as assignWeights):
 * RUN_DIR/model (the last epoch's) unless `folder` names another, e.g.
 * FILES.modelBest (the best epoch by val_acc).
 */
export function loadRunWeights(net: Network, runDir: string, folder: string = FILES.model): void {
  const saved = readModelWeights(path.join(runDir, folder));
  try {
    assignWeights(net, saved, runDir, true);
  } finally {
    for (const t of saved.values()) t.dispose();
  }
}
