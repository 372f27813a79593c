import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Config } from '../config/schema';
import { configToYaml, parseConfigYaml, parseSets, readConfigFile, resolveConfig } from '../config/load';
import { loadDataset } from '../data';
import { makeSplit, noisyLabels, restrictToLevel, Split, splitFromRecord, splitRecord } from '../data/split';
import { sourceOverlap } from '../data/overlap';
import { Dataset } from '../data/types';
import { BackendChoice, EngineInfo, initEngine } from '../engine/backend';
import { asOutOfMemory, outOfMemoryAdvice } from '../engine/oom';
import { coarserLevels, Hierarchy, Level } from '../hierarchy/tree';
import { buildNetwork } from '../models/archs';
import { frozenBlockCount, Network } from '../models/network';
import { readModelWeights, saveLayersModel } from '../runs/bundle';
import * as rd from '../runs/rundir';
import { RunFailure, UsageError } from '../util/errors';
import { readJson, relPath, writeFileAtomic, writeJsonAtomic } from '../util/fsx';
import { CheckpointState, hasCheckpoint, loadCheckpoint, recoverCheckpoint } from './checkpoint';
import { NamedOptimizer } from './optimizer';
import { train } from './loop';

export type Stage = 'pretrain' | 'finetune';

/** What a pretrain/finetune command asks for, as parsed from the command line. */
export interface StageRequest {
  stage: Stage;
  configFile?: string;
  sets: string[];
  level?: string;
  freeze?: string;
  from?: string;
  runDir?: string;
  resume?: string;
  backend: BackendChoice;
  threads?: number;
  quiet: boolean;
  /** Print nothing per run (callers that report on their own). */
  silent?: boolean;
  argv: string[];
  /** --force: resume on another backend or thread count. */
  force?: boolean;
  /** Where default run folders go (tests point this at a temp folder). */
  runsRoot?: string;
}

export interface StageOutcome {
  exitCode: number;
  runDir: string;
  summary: Record<string, unknown>;
}

/** run.json: what the run is, so --resume and reports need not parse argv. */
interface RunMeta {
  run_id: string;
  stage: Stage;
  from: string | null;
  from_run_id: string | null;
  pretrain_level: string;
  created: string;
}

interface SourceRun {
  dir: string;
  cfg: Config;
  meta: RunMeta;
  summary: Record<string, unknown>;
}

/** A finished run to fine-tune from, or a clear error saying why it is not one. */
export function readSourceRun(dir: string): SourceRun {
  const cfgFile = path.join(dir, rd.FILES.config);
  if (!fs.existsSync(cfgFile)) throw new UsageError(`--from '${dir}' is not a run folder (no ${rd.FILES.config}). Give the folder of a finished 'granular pretrain' run.`);
  const summary = rd.readSummary(dir);
  if (!summary || summary.status !== 'completed') {
    throw new UsageError(
      `--from '${dir}' is not a finished run (status: ${summary ? String(summary.status) : 'no summary.json, still running or crashed'}). ` +
        `Resume it with 'granular pretrain --resume ${dir}' or pick a completed run.`,
    );
  }
  if (!fs.existsSync(path.join(dir, rd.FILES.model, 'model.json'))) throw new UsageError(`--from '${dir}' has no model/model.json; the run did not save its network.`);
  const cfg = parseConfigYaml(fs.readFileSync(cfgFile, 'utf8'), cfgFile);
  const meta = readJson<RunMeta>(path.join(dir, rd.FILES.run));
  return { dir, cfg, meta, summary };
}

/** Config precedence of DESIGN.md ("Which config a run uses"). */
function resolveStageConfig(req: StageRequest, source: SourceRun | null): Config {
  const layers: Record<string, unknown>[] = [];
  if (source) layers.push(source.cfg as unknown as Record<string, unknown>);
  if (req.configFile) layers.push(readConfigFile(req.configFile));
  layers.push(parseSets(req.sets));
  const flags: Record<string, unknown> = {};
  if (req.level !== undefined) flags.train = { level: req.level };
  if (req.freeze !== undefined) {
    const f = req.freeze.trim();
    if (f !== 'all' && !/^\d+$/.test(f)) throw new UsageError(`--freeze '${req.freeze}' must be a number of blocks (0, 1, ...) or 'all'.`);
    flags.finetune = { freeze: f === 'all' ? 'all' : Number(f) };
  }
  layers.push(flags);
  const cfg = resolveConfig(layers);
  if (source) {
    // A pretrained network's architecture is fixed: changing it is an error, not a silent reinit.
    for (const [k, v] of Object.entries(source.cfg.model)) {
      const now = (cfg.model as Record<string, unknown>)[k];
      if (JSON.stringify(now) !== JSON.stringify(v)) {
        throw new UsageError(`model.${k} is locked by the pretrained run '${source.dir}' (${JSON.stringify(v)}); this run asks for ${JSON.stringify(now)}. Remove that override, or pretrain a new network with it.`);
      }
    }
  }
  return cfg;
}

/** Features named by the contract whose implementation has not landed yet: refuse, never ignore. */
function refuseUnavailable(cfg: Config): void {
  const no = (key: string, what: string) => {
    throw new UsageError(`${key} is set but ${what} is not available in this version of granular yet. Remove the setting (see README.md).`);
  };
  if (cfg.eval.ood_root !== null && cfg.data.format === 'synthetic') throw new UsageError('eval.ood_root holds image folders; synthetic data have no images to compare with. Use eval.ood_synthetic.');
  if (cfg.eval.ood.length && cfg.data.format === 'synthetic') {
    throw new UsageError(`eval.ood corrupts images in [0, 1]; synthetic data are feature patterns. Use eval.ood_synthetic (${['weak_common', 'more_noise', 'all_hard'].join(', ')}) for synthetic covariate shift.`);
  }
  if (cfg.eval.ood_synthetic.length && cfg.data.format !== 'synthetic') no('eval.ood_synthetic', `generator shifts for data.format '${cfg.data.format}' (they need synthetic data)`);
}

interface Prepared {
  cfg: Config;
  source: SourceRun | null;
  data: Dataset;
  split: Split;
  level: Level;
  coarser: Array<{ level: Level; map: Int32Array }>;
  trainLabels: Int32Array;
  flipped: number;
  net: Network;
  frozenBlocks: number;
  engine: EngineInfo;
}

/** Everything that can be wrong with a request is found here, before any file is written. */
async function prepare(req: StageRequest, cfg: Config, source: SourceRun | null): Promise<Prepared> {
  refuseUnavailable(cfg);
  const engine = await initEngine(req.backend, req.threads);
  const data = await loadDataset(cfg);
  const level = data.hierarchy.resolveLevel(cfg.train.level);
  if (level.classes.length < 2) throw new UsageError(`level '${cfg.train.level}' has only ${level.classes.length} class; training needs at least 2.`);
  let split: Split;
  if (source && JSON.stringify(source.cfg.data) === JSON.stringify(cfg.data)) {
    // Fine-tuning on the pretraining images (Hong et al.): the same split, so
    // the test set cannot overlap what the source network trained on.
    split = splitFromRecord(data, readJson(path.join(source.dir, rd.FILES.split)), `--from '${source.dir}'`);
  } else {
    split = makeSplit(data, cfg);
    if (source) {
      const rec = readJson<{ train: string[] }>(path.join(source.dir, rd.FILES.split));
      data.sourceOverlap = (await sourceOverlap(source.cfg, rec.train, data, split, (l) => process.stderr.write(`granular: ${l}\n`))) ?? undefined;
    }
  }
  const restricted = restrictToLevel(data, split, level);
  split = restricted.split;
  if (restricted.dropped) process.stderr.write(`granular: level '${level.spec}': ${restricted.dropped} image(s) of ${level.droppedClasses} class(es) under no listed node are left out\n`);
  const clean = Int32Array.from(split.train, (i) => level.classOf[data.train.y[i]]);
  const { labels: trainLabels, flipped } = noisyLabels(split.train.map((i) => data.train.ids[i]), clean, level.classes.length, cfg.data.label_noise, cfg.data.seed!);
  const net = buildNetwork(cfg, data.shape, level.classes.length);
  if (source) loadSourceWeights(net, source, cfg, level);
  const frozenBlocks = req.stage === 'finetune' ? frozenBlockCount(net, cfg.finetune.freeze) : 0;
  if (source && cfg.finetune.transfer === 'frozen_only') reinitUnfrozen(net, cfg, data.shape, level.classes.length, frozenBlocks);
  if (req.stage === 'pretrain' && cfg.finetune.unfreeze !== null) {
    throw new UsageError(`finetune.unfreeze is a fine-tuning schedule; 'granular pretrain' trains every block. Remove it, or use 'granular finetune'.`);
  }
  return { cfg, source, data, split, level, coarser: coarserLevels(data.hierarchy, level), trainLabels, flipped, net, frozenBlocks, engine };
}

export function loadSourceWeights(net: Network, source: SourceRun, cfg: Config, level: Level): void {
  const saved = readModelWeights(path.join(source.dir, rd.FILES.model));
  try {
    if (cfg.finetune.head === 'keep') {
      const units = saved.get('head/kernel')?.shape[1];
      if (units !== level.classes.length) {
        throw new UsageError(`finetune.head=keep needs the target level to have as many classes as the source's head (${units}); '${cfg.train.level}' has ${level.classes.length}. Use finetune.head=new.`);
      }
    }
    for (const v of net.variables()) {
      if (v.block < 0 && cfg.finetune.head === 'new') continue;
      const w = saved.get(v.name);
      if (!w) throw new UsageError(`the pretrained network in '${source.dir}' has no weight '${v.name}'; it was saved by a different architecture.`);
      if (w.shape.join('x') !== v.variable.shape.join('x')) {
        throw new UsageError(`weight '${v.name}' of '${source.dir}' has shape [${w.shape}] but this run needs [${v.variable.shape}] (different data.image_size or data.channels?).`);
      }
      v.variable.assign(w);
    }
  } finally {
    for (const t of saved.values()) t.dispose();
  }
}

/**
 * Dar et al.'s transfer: only the frozen blocks keep the pretrained weights;
 * the others start anew, from the initialisation a fresh network gets.
 */
function reinitUnfrozen(net: Network, cfg: Config, shape: [number, number, number], numClasses: number, frozen: number): void {
  const fresh = buildNetwork(cfg, shape, numClasses);
  const init = new Map(fresh.variables().map((v) => [v.name, v.variable]));
  for (const v of net.variables()) if (v.block >= frozen) v.variable.assign(init.get(v.name)!);
  fresh.dispose();
}

function hierarchyRecord(h: Hierarchy, level: Level): Record<string, unknown> {
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
  };
}

/**
 * The frozen prefix can be computed once per example when it never trains and
 * is deterministic: permanently frozen blocks (no unfreezing schedule) run in
 * inference mode, and no augmentation reaches them.
 */
export function prefixCacheable(cfg: Config, stage: Stage, frozen: number): boolean {
  return stage === 'finetune' && frozen > 0 && cfg.finetune.unfreeze === null && cfg.data.augment.length === 0 && process.env.GRANULAR_PREFIX_CACHE !== '0';
}

function envRecord(engine: EngineInfo, net: Network, frozen: number, prefixCached: boolean): Record<string, unknown> {
  return {
    backend: engine.backend,
    backend_requested: engine.requested,
    backend_fallbacks: engine.fallbacks,
    threads: engine.threads,
    kernels: engine.kernels,
    ...(engine.native ? { native_kernels: engine.native } : {}),
    device: engine.device,
    versions: engine.versions,
    platform: `${os.platform()} ${os.arch()}`,
    hostname: os.hostname(),
    pid: process.pid,
    start_time: new Date().toISOString(),
    blocks: net.blocks.map((b, i) => ({ name: b.name, frozen: i < frozen, layers: b.layers.map((l) => l.name) })),
    frozen_blocks: frozen,
    prefix_cached: prefixCached,
  };
}

/**
 * Bit-identical resume is promised for the same backend, kernel set and
 * thread count only: the native oneDNN kernels and the wasm ones agree to
 * ~1e-6, not to the bit. Runs from before `kernels` was recorded ran on the
 * backend's own kernels.
 */
function checkSameEngine(runDir: string, engine: EngineInfo, force: boolean): void {
  const envFile = path.join(runDir, rd.FILES.env);
  if (!fs.existsSync(envFile)) return;
  const before = readJson<{ backend: string; threads: number; kernels?: string }>(envFile);
  const beforeKernels = before.kernels ?? before.backend;
  if (before.backend === engine.backend && before.threads === engine.threads && beforeKernels === engine.kernels) return;
  let what = `run '${runDir}' was trained on ${before.backend} with ${before.threads} thread(s); this process has ${engine.backend} with ${engine.threads}`;
  let kernelHint = '';
  if (beforeKernels !== engine.kernels) {
    what += ` (kernels: ${beforeKernels} then, ${engine.kernels} now)`;
    if (beforeKernels === 'onednn') kernelHint = " after 'npm run build:native', without GRANULAR_NATIVE=0";
    else if (beforeKernels === 'wasm' && engine.kernels === 'onednn') kernelHint = ' and GRANULAR_NATIVE=0';
  }
  if (!force) throw new UsageError(`${what}. Resume with --backend ${before.backend} --threads ${before.threads}${kernelHint}, or add --force to continue anyway (the result is then no longer bit-identical to an uninterrupted run).`);
  process.stderr.write(`granular: warning: ${what}; continuing because of --force, so bit-identity with an uninterrupted run is not promised\n`);
}

/** Run a pretrain or finetune stage to the end; returns the exit code (2s are thrown as UsageError). */
export async function runStage(req: StageRequest): Promise<StageOutcome> {
  const resuming = req.resume !== undefined;
  let cfg: Config;
  let source: SourceRun | null = null;
  let runDir: string;
  let meta: RunMeta;
  if (resuming) {
    runDir = req.resume!;
    const cfgFile = path.join(runDir, rd.FILES.config);
    if (!fs.existsSync(cfgFile)) throw new UsageError(`--resume '${runDir}' is not a run folder (no ${rd.FILES.config}).`);
    const done = rd.readSummary(runDir);
    if (done?.status === 'completed') throw new UsageError(`run '${runDir}' already completed; nothing to resume. Start a new run instead.`);
    const onlyEpochs = req.sets.every((x) => /^\s*train\.epochs\s*=/.test(x));
    if (req.configFile || !onlyEpochs || req.level || req.freeze || req.from) {
      throw new UsageError(`--resume continues a run exactly as configured in ${cfgFile}; drop --config/--set/--level/--freeze/--from (only --set train.epochs=N, to extend training, is allowed).`);
    }
    meta = readJson<RunMeta>(path.join(runDir, rd.FILES.run));
    if (meta.stage !== req.stage) throw new UsageError(`run '${runDir}' is a ${meta.stage} run; resume it with 'granular ${meta.stage} --resume ${runDir}'.`);
    cfg = parseConfigYaml(fs.readFileSync(cfgFile, 'utf8'), cfgFile);
    if (req.sets.length) {
      const epochs = resolveConfig([cfg as unknown as Record<string, unknown>, parseSets(req.sets)]).train.epochs;
      if (epochs < cfg.train.epochs) throw new UsageError(`--resume may extend train.epochs (${cfg.train.epochs}), not shorten it to ${epochs}.`);
      if (epochs !== cfg.train.epochs) {
        process.stderr.write(`granular: extending ${runDir} from ${cfg.train.epochs} to ${epochs} epochs; the learning-rate schedule stretches, so the result differs from a run made with ${epochs} epochs from the start\n`);
        cfg.train.epochs = epochs;
        writeFileAtomic(cfgFile, configToYaml(cfg, `resolved config of this ${req.stage} run; train.epochs extended on resume`));
      }
    }
    if (meta.from) source = readSourceRun(path.resolve(runDir, meta.from));
  } else {
    if (req.stage === 'finetune' && req.from) source = readSourceRun(req.from);
    cfg = resolveStageConfig(req, source);
    runDir = req.runDir ?? rd.defaultRunDir(req.stage, cfg.name, req.runsRoot);
    rd.checkNewRunDir(runDir);
    meta = {
      run_id: `${path.basename(runDir)}-${process.pid.toString(36)}${Date.now().toString(36)}`,
      stage: req.stage,
      from: null,
      from_run_id: source?.meta.run_id ?? null,
      pretrain_level: req.stage === 'pretrain' ? '' : source ? String(source.summary.level) : 'scratch',
      created: new Date().toISOString(),
    };
  }

  const p = await prepare(req, cfg, source);
  if (req.stage === 'pretrain') meta.pretrain_level = p.level.name;
  if (resuming) checkSameEngine(runDir, p.engine, req.force === true);

  // From here on the run exists: failures are recorded in summary.json.
  rd.createRunDir(runDir);
  if (source) meta.from = relPath(runDir, source.dir);
  const lockNote = rd.acquireLock(runDir);
  if (lockNote) process.stderr.write(`granular: ${lockNote}\n`);
  const started = Date.now();
  const prefixCache = prefixCacheable(cfg, req.stage, p.frozenBlocks);
  const env = envRecord(p.engine, p.net, p.frozenBlocks, prefixCache);
  let resumeState: CheckpointState | undefined;
  let reference: Map<string, tf.Tensor> | undefined;
  let previousRow: Record<string, number> | undefined;
  const optimizer = new NamedOptimizer({ kind: cfg.train.optimizer, momentum: cfg.train.momentum, weightDecay: cfg.train.weight_decay });
  if (!resuming) {
    writeFileAtomic(path.join(runDir, rd.FILES.config), configToYaml(cfg, `resolved config of this ${req.stage} run, written before training\n${meta.run_id}`));
    writeFileAtomic(path.join(runDir, rd.FILES.command), req.argv.map(shellQuote).join(' ') + '\n');
    writeJsonAtomic(path.join(runDir, rd.FILES.run), meta);
    writeJsonAtomic(path.join(runDir, rd.FILES.hierarchy), hierarchyRecord(p.data.hierarchy, p.level));
    writeJsonAtomic(path.join(runDir, rd.FILES.split), { ...splitRecord(p.data, p.split), label_noise_flipped: p.flipped });
  } else if (recoverCheckpoint(runDir) !== null || hasCheckpoint(runDir)) {
    ({ state: resumeState, reference } = loadCheckpoint(runDir, p.net, optimizer));
    // Rows past the checkpoint belong to work that will be redone.
    const { torn } = rd.readMetricsChecked(runDir);
    if (torn) process.stderr.write(`granular: dropped a torn last line of ${rd.FILES.metrics} (the process died while writing it)\n`);
    // Every row records the step it was written after; rows past the checkpoint's step belong to redone work.
    const rows = rd.readMetrics(runDir).filter((r) => Number(r.step ?? 0) <= resumeState!.step && !(r.kind === 'epoch' && Number(r.epoch) > resumeState!.epoch));
    rd.rewriteMetrics(runDir, rows);
    previousRow = rows.filter((r) => r.kind === 'epoch').pop() as Record<string, number> | undefined;
    process.stderr.write(`granular: resuming ${runDir} from ${resumeState.inEpoch ? `inside epoch ${resumeState.epoch + 1}` : `epoch ${resumeState.epoch}`} (step ${resumeState.step})\n`);
  } else {
    rd.rewriteMetrics(runDir, []);
  }
  writeJsonAtomic(path.join(runDir, rd.FILES.env), { ...env, resumed: resuming });
  if (!reference?.size && cfg.eval.dynamics_every !== 0) {
    // Distances are measured from the weights training starts with (the pretrained ones when fine-tuning).
    reference = new Map(p.net.variables().filter((v) => v.trainable).map((v) => [v.name, tf.clone(v.variable)]));
  }
  if (!req.quiet && !req.silent) process.stderr.write(`granular: ${req.stage} ${runDir} (level ${p.level.name}, ${p.level.classes.length} classes, ${p.split.train.length} training images, backend ${p.engine.backend})\n`);

  let interrupted: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) process.exit(sig === 'SIGINT' ? 130 : 143); // a second signal: leave now, the last checkpoint stays valid
    interrupted = sig;
    process.stderr.write(`granular: ${sig} received, stopping after this step (send again to exit at once)\n`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const base = {
    run_id: meta.run_id,
    stage: req.stage,
    level: p.level.name,
    level_spec: cfg.train.level,
    num_classes: p.level.classes.length,
    pretrain_level: meta.pretrain_level,
    from: meta.from,
    from_run_id: meta.from_run_id,
    frozen_blocks: p.frozenBlocks,
    backend: p.engine.backend,
    threads: p.engine.threads,
    skipped_images: p.data.skipped,
    ...(p.data.sourceOverlap ? { source_overlap: p.data.sourceOverlap } : {}),
    label_noise_flipped: p.flipped,
  };
  let summary: Record<string, unknown>;
  let exitCode: number;
  try {
    const result = await train({
      cfg, net: p.net, data: p.data, split: p.split, level: p.level, coarser: p.coarser, trainLabels: p.trainLabels,
      frozenBlocks: p.frozenBlocks, runDir, quiet: req.quiet, silent: req.silent, optimizer, resumeFrom: resumeState, previousRow,
      stage: req.stage, reference, prefixCache,
      shouldStop: () => interrupted !== null,
    });
    const wall = (Date.now() - started) / 1000;
    if (result.stoppedEarly) {
      summary = { status: 'interrupted', ...base, signal: interrupted, wall_seconds: wall, resume: `granular ${req.stage} --resume ${runDir}` };
      exitCode = interrupted === 'SIGINT' ? 130 : 143;
    } else {
      await saveModel(p.net, runDir);
      summary = { status: 'completed', ...base, ...result.final, epochs: cfg.train.epochs, wall_seconds: wall, train_images_per_second: result.trainImagesPerSecond };
      exitCode = 0;
    }
  } catch (e) {
    const err = e as Error;
    summary = { status: 'failed', ...base, error: explainFailure(err, runDir, req.stage, cfg), error_type: err.name, wall_seconds: (Date.now() - started) / 1000 };
    if (!(e instanceof RunFailure)) summary.stack = err.stack;
    exitCode = 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    optimizer.dispose();
    p.net.dispose();
    if (reference) tf.dispose([...reference.values()]);
  }
  try {
    rd.writeSummary(runDir, summary);
  } catch (e) {
    // The disk may be the problem: say so rather than die with a stack trace.
    process.stderr.write(`granular: could not write ${path.join(runDir, rd.FILES.summary)}: ${(e as Error).message}\n`);
    if (exitCode === 0) exitCode = 1;
  }
  rd.releaseLock(runDir);
  return { exitCode, runDir, summary };
}

/** Turn resource errors into messages that say what happened and what to do. */
function explainFailure(err: Error, runDir: string, stage: Stage, cfg: Config): string {
  const code = (err as NodeJS.ErrnoException).code;
  const resume = `then continue with 'granular ${stage} --resume ${runDir}' (the last checkpoint is intact)`;
  if (code === 'ENOSPC') return `the disk is full (ENOSPC) while writing in '${runDir}': ${err.message}. Free space, ${resume}.`;
  if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') return `cannot write in '${runDir}' (${code}): ${err.message}. Make the folder writable, ${resume}.`;
  const oom = asOutOfMemory(err);
  if (oom) return outOfMemoryAdvice(oom, { batchSize: cfg.train.batch_size, imageSize: cfg.data.image_size });
  if (/out of memory|Memory\.grow|Array buffer allocation failed|Aborted\(OOM\)|heap out of memory/i.test(err.message)) {
    return `ran out of memory with train.batch_size=${cfg.train.batch_size} (${err.message.split('\n')[0]}). Lower train.batch_size (e.g. --set train.batch_size=${Math.max(1, Math.floor(cfg.train.batch_size / 2))}) or model.width, then start a new run.`;
  }
  return err.message;
}

async function saveModel(net: Network, runDir: string): Promise<void> {
  const dir = path.join(runDir, rd.FILES.model);
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  await saveLayersModel(net.layersModel(), tmp);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@,+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

