import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Config } from '../config/schema';
import { checkEvalApplies } from '../config/checks';
import { configToYaml, parseConfigYaml, parseSets, configFileList, readConfigFiles, resolveConfig } from '../config/load';
import { tagLayer } from '../config/provenance';
import { FINETUNE_DEFAULT_LEVEL, namesLevel } from '../config/stage-level';
import { loadDataset } from '../data';
import { levelLabels, makeSplit, noisyLabels, restrictToLevel, Split, splitFromRecord, splitRecord } from '../data/labels/split';
import { applyNormalization, inputNormalization } from '../data/labels/normalize';
import { checkSourceOverlap } from '../data/labels/overlap';
import { Dataset } from '../data/types';
import { describeDuplicates } from '../data/labels/duplicates';
import { listSome, TrainImagesBroken } from '../data/cache/catalog';
import { BackendChoice, engineCapabilities, EngineInfo, initEngine } from '../engine';
import { coarserLevels, Level } from '../hierarchy/tree';
import { buildNetwork } from '../models/archs';
import { Network } from '../models/network';
import {
  checkSameEngine, completedSummary, envRecord, failedSummary, interruptedSummary, newRunMeta, readRunFolder, readSourceRun, readSplitRecord,
  RunMeta, saveModel, SourceRun, Stage, summaryBase, writeRunRecords,
} from '../runs/run';
import * as rd from '../runs/rundir';
import { RunFailure, UsageError } from '../util/errors';
import { relPath, writeFileAtomic, writeJsonAtomic } from '../util/fsx';
import { CheckpointState, hasCheckpoint, loadCheckpoint, recoverCheckpoint } from './checkpoint';
import { NamedOptimizer } from './optimizer';
import { FinetunePlan, headRequest, initialTrainable, parseFreeze, planFinetune } from './finetune';
import { Interrupted, stopEvaluation } from '../measure/predict';
import { HeadPlan, headsSummary, levelsName, planHeads, recordedLevelClasses, resolveTrainLevels, TrainLevels } from './heads';
import { train } from './loop';
import { gitRecord } from '../runs/git';

/** What a pretrain/finetune command asks for, as parsed from the command line. */
export interface StageRequest {
  stage: Stage;
  /** One or more --config files, composed in order (later wins). */
  configFile?: string | readonly string[];
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

/**
 * Config precedence of DESIGN.md ("Which config a run uses"). A finetune run
 * whose own layers (--config, --set, --level) name no level trains at `top`,
 * never at its source's level; `levelDefaulted` says so.
 */
function resolveStageConfig(req: StageRequest, source: SourceRun | null): { cfg: Config; levelDefaulted: boolean } {
  const layers: Record<string, unknown>[] = [];
  if (source) layers.push(tagLayer(structuredClone(source.cfg) as unknown as Record<string, unknown>, `the config of --from '${source.dir}'`));
  const own: Record<string, unknown>[] = [];
  own.push(...readConfigFiles(req.configFile));
  own.push(parseSets(req.sets));
  const flags: Record<string, unknown> = {};
  if (req.level !== undefined) flags.train = { level: req.level };
  if (req.freeze !== undefined) flags.finetune = { freeze: parseFreeze(req.freeze) };
  own.push(tagLayer(flags, 'the command line flags'));
  const levelDefaulted = req.stage === 'finetune' && !own.some(namesLevel);
  if (levelDefaulted) own.push({ train: { level: FINETUNE_DEFAULT_LEVEL } });
  const cfg = resolveConfig([...layers, ...own]);
  if (source && cfg.train.level_weights !== null && JSON.stringify(cfg.train.level) !== JSON.stringify(source.cfg.train.level)) {
    // The source's per-level loss weights belong to its list of levels; a run at other levels does not inherit them.
    const ownWeights = own.some((l) => (l.train as Record<string, unknown> | undefined)?.level_weights !== undefined);
    if (!ownWeights) cfg.train.level_weights = null;
  }
  if (source) {
    // A pretrained network's architecture is fixed: changing it is an error, not a silent reinit.
    for (const [k, v] of Object.entries(source.cfg.model)) {
      const now = (cfg.model as Record<string, unknown>)[k];
      if (JSON.stringify(now) !== JSON.stringify(v)) {
        throw new UsageError(`model.${k} is locked by the pretrained run '${source.dir}' (${JSON.stringify(v)}); this run asks for ${JSON.stringify(now)}. Remove that override, or pretrain a new network with it.`);
      }
    }
  }
  return { cfg, levelDefaulted };
}

const count = (n: number) => n.toLocaleString('en-US');

/**
 * The line a stage starts with: the run folder, the source run (and the level
 * it trained at) for a fine-tuning run, the level trained here and why, which
 * blocks are frozen and which train with their parameter counts, the data
 * and the backend.
 */
function startLine(stage: Stage, runDir: string, p: Prepared, levelDefaulted: boolean): string {
  const { net, plan, level } = p;
  const flags = initialTrainable(net.blocks.length, plan.frozenBlocks, plan.unfreeze, p.cfg.train.seed);
  const names = (open: boolean) => net.blocks.filter((_, i) => flags[i] === open).map((b) => b.name);
  const frozen = names(false);
  const trainable = [...names(true), 'head'];
  const frozenParams = net.paramCount(flags.map((f) => !f), false);
  const trainableParams = net.paramCount(flags);
  const lines = [`granular: ${stage} ${runDir}`];
  if (stage === 'finetune') {
    lines[0] += p.source ? ` from ${p.source.dir} (pretrained at ${String(p.source.summary.level)}, ${String(p.source.summary.num_classes ?? '?')} classes)` : ' from scratch (no --from: random initial weights)';
  }
  const why = levelDefaulted ? ` ('${FINETUNE_DEFAULT_LEVEL}', the coarsest: no --level given, and finetune does not inherit its source's level)` : ` ('${[p.cfg.train.level].flat().join("', '")}')`;
  const levels = p.trained.levels.length > 1 ? `levels ${p.trained.levels.map((l) => `${l.name} (${l.classes.length} classes)`).join(' + ')}${why}, primary ${level.name},` : `level ${level.name}${why},`;
  lines.push(`  ${levels} ${level.classes.length} classes, ${p.split.train.length} training images, ${p.split.val.length} validation, ${p.split.test.length} test`);
  for (const note of dataNotes(p.data)) lines.push(`  ${note}`);
  if (stage === 'finetune') {
    const gradual = plan.unfreeze ? `; gradual unfreezing opens ${plan.unfreeze.order === 'fisher' ? 'blocks by Fisher trace' : plan.unfreeze.order} every ${plan.unfreeze.every} ${plan.unfreeze.unit}(s)` : '';
    lines.push(`  frozen: ${frozen.length ? `${frozen.join(', ')} (${count(frozenParams)} params)` : 'none'}; trainable: ${trainable.join(', ')} (${count(trainableParams)} params)${gradual}`);
  } else {
    lines.push(`  ${net.arch}: ${net.blocks.map((b) => b.name).join(', ')}, head (${count(trainableParams)} params)`);
  }
  lines[lines.length - 1] += `; backend ${p.engine.backend}, ${p.engine.threads} thread(s)`;
  return lines.join('\n') + '\n';
}

/** What the data settled on its own: data.channels auto, the dataset's own duplicates (start lines and config.yaml say it). */
function dataNotes(d: Dataset): string[] {
  const out: string[] = [];
  if (d.channels?.auto) out.push(`data.channels ${d.channels.channels} (auto: ${d.channels.reason})`);
  const dup = d.duplicates;
  if (dup && dup.test_in_train + dup.test_label_conflicts > 0) {
    const did = dup.kept_all ? 'all kept: they are the whole test set (see the warning above)' : dup.policy === 'drop_test' ? `${dup.dropped} left out of the test set (data.duplicates=drop_test)` : 'kept in the test set (data.duplicates=keep)';
    out.push(`the dataset's own duplicates: ${describeDuplicates(dup)}; ${did}`);
  }
  return out;
}

interface Prepared {
  cfg: Config;
  source: SourceRun | null;
  data: Dataset;
  split: Split;
  level: Level;
  /** Every trained level (multi-level training: one head each), the primary first. */
  trained: TrainLevels;
  heads: HeadPlan;
  coarser: Array<{ level: Level; map: Int32Array }>;
  trainLabels: Int32Array;
  flipped: number;
  net: Network;
  plan: FinetunePlan;
  engine: EngineInfo;
  /** Seconds spent building the network and loading its source weights (part of first_step_seconds). */
  modelBuildSeconds: number;
}

/**
 * Everything that can be wrong with a request is found here, before any file is written.
 * `defer`: whether the training images' stamps may be checked on a worker thread meanwhile.
 */
async function prepare(req: StageRequest, cfg: Config, source: SourceRun | null, defer = true): Promise<Prepared> {
  checkEvalApplies(cfg);
  const engine = await initEngine(req.backend, req.threads);
  // A fresh pretraining-style run reads no training pixels before its first
  // step, so the training images' stamps are checked on a worker thread while
  // the rest is prepared; the check ends before the run folder exists (below).
  const deferTrainStamps = defer && req.resume === undefined && source === null && cfg.data.normalize !== 'dataset' && !cfg.data.relabel?.startsWith('cluster:');
  const data = await loadDataset(cfg, undefined, { deferTrainStamps });
  const trained = resolveTrainLevels(data.hierarchy, cfg);
  const level = trained.levels[0];
  for (const l of trained.levels) if (l.classes.length < 2) throw new UsageError(`level '${l.spec}' has only ${l.classes.length} class; training needs at least 2.`);
  const heads = planHeads(cfg, headRequest(cfg), req.stage, data.hierarchy, trained, source ? { cfg: source.cfg, dir: source.dir, levelClasses: recordedLevelClasses(source.dir) } : null, (l) => process.stderr.write(`granular: ${l}\n`));
  let split: Split;
  // An imported checkpoint (granular import): its training images are unknown, so there is no split to share or overlap to check.
  const external = source !== null && (source.meta as { external?: unknown }).external !== undefined;
  if (external && cfg.finetune.head !== 'new') {
    throw new UsageError(`finetune.head=${cfg.finetune.head} needs the source's class hierarchy; '${source!.dir}' is an imported checkpoint (${String(source!.summary.level)}) without one. Use finetune.head=new.`);
  }
  // Same images: the data settings equal except those that only relabel them (issue 21, item 8: a relabelled
  // source fine-tuned with data.relabel=null must keep its split, or its validation set may hold the source's training images).
  const imagesOf = (d: Config['data']) => JSON.stringify({ ...d, relabel: null, relabel_from: null, label_noise: 0 });
  const sameData = source !== null && !external && imagesOf(source.cfg.data) === imagesOf(cfg.data);
  if (req.resume !== undefined) {
    // The run's own split, its images checked against the content it recorded.
    split = splitFromRecord(data, readSplitRecord(req.resume), `--resume '${req.resume}'`);
  } else if (sameData) {
    // Fine-tuning on the pretraining images (Hong et al.): the same split, so
    // the test set cannot overlap what the source network trained on.
    split = splitFromRecord(data, readSplitRecord(source!.dir), `--from '${source!.dir}'`);
  } else {
    split = makeSplit(data, cfg);
  }
  if (external) {
    process.stderr.write(`granular: '${source!.dir}' is an imported checkpoint: the images it was trained on are unknown, so overlap with this run's test set cannot be checked\n`);
  } else if (source) {
    // However the data is named or split: a test image the source trained on is refused.
    const overlap = await checkSourceOverlap({ dir: source.dir, cfg: source.cfg, split: readSplitRecord(source.dir) }, data, split, sameData, (l) => process.stderr.write(`granular: ${l}\n`));
    if (overlap && !sameData) data.sourceOverlap = overlap;
  }
  if (cfg.train.early_stop.patience > 0 && split.val.length === 0) {
    // Early stopping reads val_acc only (never the test set): without validation images it could never fire.
    throw new UsageError(`train.early_stop.patience is ${cfg.train.early_stop.patience} but this run holds out no validation images (data.val_fraction ${cfg.data.val_fraction}). Set data.val_fraction (e.g. 0.1), or train.early_stop.patience=0.`);
  }
  const restricted = restrictToLevel(data, split, level);
  split = restricted.split;
  if (restricted.dropped) process.stderr.write(`granular: level '${level.spec}': ${restricted.dropped} image(s) of ${level.droppedClasses} class(es) under no listed node are left out\n`);
  applyNormalization(data, inputNormalization(cfg, data, split));
  const clean = levelLabels(data.train, split.train, level);
  const { labels: trainLabels, flipped } = noisyLabels(split.train.map((i) => data.train.ids[i]), clean, level.classes.length, cfg.data.label_noise, cfg.data.seed);
  const builtFrom = performance.now();
  const net = buildNetwork(cfg, data.shape, heads.headClasses, {
    headSeed: heads.headSeed ?? undefined,
    extraHeads: heads.extra.map((e) => ({ level: e.level.name, numClasses: e.level.classes.length })),
  });
  const plan = planFinetune(cfg, req.stage, net, source?.dir ?? null, data.shape, heads.sourceHead);
  const modelBuildSeconds = (performance.now() - builtFrom) / 1000;
  if (data.trainVerified) {
    try {
      await data.trainVerified();
    } catch (e) {
      if (!(e instanceof TrainImagesBroken)) throw e;
      // A cold cache would skip them (or refuse, data.on_bad_image=fail) when listing, and split without them: so does this run.
      process.stderr.write(`granular: ${e.images.length} training image(s) changed since they were cached and can no longer be decoded (${listSome(e.images, 3)}): loading the dataset again\n`);
      return prepare(req, cfg, source, false);
    }
  }
  return { cfg, source, data, split, level, trained, heads, coarser: coarserLevels(data.hierarchy, level), trainLabels, flipped, net, plan, engine, modelBuildSeconds };
}

/** Run a pretrain or finetune stage to the end; returns the exit code (2s are thrown as UsageError). */
export async function runStage(req: StageRequest): Promise<StageOutcome> {
  const resuming = req.resume !== undefined;
  let cfg: Config;
  let source: SourceRun | null = null;
  let runDir: string;
  let meta: RunMeta;
  let levelDefaulted = false;
  if (resuming) {
    runDir = req.resume!;
    const cfgFile = path.join(runDir, rd.FILES.config);
    const run = readRunFolder(runDir);
    if (run.configText === null) throw new UsageError(`--resume '${runDir}' is not a run folder (no ${rd.FILES.config}).`);
    if (run.summary?.status === 'completed') throw new UsageError(`run '${runDir}' already completed; nothing to resume. Start a new run instead.`);
    const onlyEpochs = req.sets.every((x) => /^\s*train\.epochs\s*=/.test(x));
    if (configFileList(req.configFile).length || !onlyEpochs || req.level || req.freeze || req.from) {
      throw new UsageError(`--resume continues a run exactly as configured in ${cfgFile}; drop --config/--set/--level/--freeze/--from (only --set train.epochs=N, to extend training, is allowed).`);
    }
    if (!run.meta.stage) throw new UsageError(`--resume '${runDir}': its ${rd.FILES.run} is missing or unreadable, so the run folder is damaged. Start a new run.`);
    meta = run.meta as RunMeta;
    if (meta.stage !== req.stage) throw new UsageError(`run '${runDir}' is a ${meta.stage} run; resume it with 'granular ${meta.stage} --resume ${runDir}'.`);
    cfg = parseConfigYaml(run.configText, cfgFile);
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
    ({ cfg, levelDefaulted } = resolveStageConfig(req, source));
    runDir = req.runDir ?? rd.defaultRunDir(req.stage, cfg.name, req.runsRoot);
    if (req.runDir !== undefined) rd.checkNewRunDir(runDir);
    meta = newRunMeta(runDir, req.stage, source); // its run_id is made again once the folder is claimed
  }

  // git runs in child processes while the data loads (bin/granular.js may have asked already).
  const git = gitRecord();
  const p = await prepare(req, cfg, source);
  const gitInfo = await git;
  if (req.stage === 'pretrain') meta.pretrain_level = levelsName(p.trained.levels);
  if (resuming) checkSameEngine(runDir, p.engine, req.force === true);

  // From here on the run exists: failures are recorded in summary.json.
  if (!resuming) {
    // Claimed atomically: runs started in the same second get -2, -3, ...
    runDir = rd.createRunDir(runDir, req.runDir === undefined);
    meta.run_id = newRunMeta(runDir, req.stage, source).run_id;
  }
  if (source) meta.from = relPath(runDir, source.dir);
  const lockNote = rd.acquireLock(runDir, !resuming);
  if (lockNote) process.stderr.write(`granular: ${lockNote}\n`);
  const started = Date.now();
  const startedAt = performance.now();
  const env = envRecord(p.engine, p.net, p.plan.frozenBlocks, p.plan.prefixCache, gitInfo);
  let resumeState: CheckpointState | undefined;
  let reference: Map<string, tf.Tensor> | undefined;
  let previousRow: Record<string, number> | undefined;
  const optimizer = new NamedOptimizer({ kind: cfg.train.optimizer, momentum: cfg.train.momentum, weightDecay: cfg.train.weight_decay });
  if (!resuming) {
    writeRunRecords(runDir, { cfg, meta, argv: req.argv, hierarchy: p.data.hierarchy, level: p.level, relabel: p.data.relabelRecord, split: { ...splitRecord(p.data, p.split), label_noise_flipped: p.flipped }, notes: dataNotes(p.data) });
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
  // Signals are handled from before env.json exists (what watchers take as the run having started).
  let interrupted: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) process.exit(sig === 'SIGINT' ? 130 : 143); // a second signal: leave now, the last checkpoint stays valid
    interrupted = sig;
    // An evaluation pass in progress stops at its next batch too.
    stopEvaluation(sig);
    process.stderr.write(`granular: ${sig} received, stopping after this step (send again to exit at once)\n`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  writeJsonAtomic(path.join(runDir, rd.FILES.env), { ...env, resumed: resuming });
  // Time earlier processes spent on this run (to its checkpoint): wall_seconds counts them too.
  const wallBefore = resumeState?.carry.wall_seconds_done ?? 0;
  if (!reference?.size && cfg.eval.dynamics_every !== 0) {
    // Distances are measured from the weights training starts with (the pretrained ones when fine-tuning).
    reference = new Map(p.net.variables().filter((v) => v.trainable).map((v) => [v.name, tf.clone(v.variable)]));
  }
  if (!req.silent) process.stderr.write(startLine(req.stage, runDir, p, levelDefaulted));

  const base = { ...summaryBase({ meta, cfg, level: p.level, frozenBlocks: p.plan.frozenBlocks, engine: p.engine, data: p.data, flipped: p.flipped }), ...headsSummary(p.trained, p.heads, p.net.headSeed), ...(p.plan.reinitSeed != null ? { transfer: 'frozen_only', reinit_seed: p.plan.reinitSeed } : {}), model_build_seconds: p.modelBuildSeconds };
  let summary: Record<string, unknown>;
  let exitCode: number;
  // Training images found changed by the deferred stamp check were decoded again: split.json records their new hashes.
  let dataReady: Promise<void> | undefined;
  const trainImagesChecked = async () => {
    const changed = (await p.data.trainVerified?.()) ?? 0;
    if (changed > 0) writeJsonAtomic(path.join(runDir, rd.FILES.split), { ...splitRecord(p.data, p.split), label_noise_flipped: p.flipped });
  };
  try {
    const result = await train({
      cfg, net: p.net, data: p.data, split: p.split, level: p.level, coarser: p.coarser, trainLabels: p.trainLabels,
      plan: p.plan, heads: p.heads, runDir, quiet: req.quiet, silent: req.silent, optimizer, resumeFrom: resumeState, previousRow, reference,
      shouldStop: () => interrupted !== null, startedAt, deviceMemory: engineCapabilities().deviceMemory,
      dataReady: () => (dataReady ??= trainImagesChecked()),
    });
    const wall = wallBefore + (Date.now() - started) / 1000;
    // A signal that arrived after the last step but before the run could complete (final
    // evaluation, saving) still interrupts it: the run stays resumable from its last checkpoint,
    // and --resume completes it (trains nothing more, evaluates and saves); a stop asked for
    // before completion never leaves a run reported completed.
    if (result.stoppedEarly || interrupted !== null) {
      summary = interruptedSummary(base, runDir, interrupted, wall);
      exitCode = interrupted === 'SIGINT' ? 130 : 143;
    } else {
      await saveModel(p.net, runDir);
      summary = { ...completedSummary(base, result.final, cfg.train.epochs, wall, result.trainImagesPerSecond), ...result.fit };
      exitCode = 0;
    }
  } catch (e) {
    if (e instanceof Interrupted) {
      summary = interruptedSummary(base, runDir, e.signal, wallBefore + (Date.now() - started) / 1000);
      exitCode = e.signal === 'SIGINT' ? 130 : 143;
    } else {
      summary = failedSummary(base, e as Error, runDir, cfg, wallBefore + (Date.now() - started) / 1000, e instanceof RunFailure);
      exitCode = 1;
    }
  } finally {
    stopEvaluation(null);
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
