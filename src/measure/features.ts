import * as path from 'node:path';
import { Config } from '../config/schema';
import { parseConfigYaml } from '../config/load';
import { primaryLevelSpec } from '../config/stage-level';
import { Dataset, Examples } from '../data/types';
import { buildNetwork } from '../models/archs';
import { Network } from '../models/network';
import { readModelWeights } from '../runs/bundle';
import * as rd from '../runs/rundir';
import { readRunFolder, readSplitRecord } from '../runs/run';
import { Normalization } from '../data/cache/store';
import { UsageError } from '../util/errors';
import { prefixFeatures } from './predict';

/**
 * Penultimate features (the head's input: the output of every block, batch
 * norm in inference mode) of examples `idx` of `e`. Returns [n x dim]
 * row-major and dim.
 */
export async function penultimateFeatures(net: Network, e: Examples, idx: readonly number[], shape: readonly number[]): Promise<{ x: Float32Array; dim: number }> {
  const f = await prefixFeatures(net, e, idx, shape, net.blocks.length);
  return { x: f.x, dim: f.shape.reduce((a, b) => a * b, 1) };
}

/** A finished run's network, rebuilt from its config.yaml and model/ for inputs of `shape`. */
export function loadRunNetwork(runDir: string, shape: [number, number, number], key: string): { net: Network; cfg: Config; summary: Record<string, unknown> } {
  const cfgFile = path.join(runDir, rd.FILES.config);
  const run = readRunFolder(runDir);
  if (run.configText === null) throw new UsageError(`${key} '${runDir}' is not a run folder (no ${rd.FILES.config}). Give the folder of a finished granular run.`);
  const summary = run.summary;
  if (summary?.status !== 'completed') throw new UsageError(`${key} '${runDir}' is not a completed run (status: ${summary ? String(summary.status) : 'no summary.json'}). Finish it first.`);
  const cfg = parseConfigYaml(run.configText, cfgFile);
  if (cfg.data.image_size !== shape[0] || cfg.data.channels !== shape[2]) {
    throw new UsageError(`${key} '${runDir}' was trained on ${cfg.data.image_size}x${cfg.data.image_size}x${cfg.data.channels} images; this data is ${shape.join('x')}. Use the same data.image_size and data.channels.`);
  }
  const saved = readModelWeights(path.join(runDir, rd.FILES.model));
  try {
    const head = saved.get('head/kernel');
    if (!head) throw new UsageError(`${key} '${runDir}': model/ has no head/kernel; it was not saved by granular.`);
    const net = buildNetwork(cfg, shape, head.shape[1]!);
    for (const v of net.variables()) {
      const w = saved.get(v.name);
      if (!w || w.shape.join('x') !== v.variable.shape.join('x')) {
        net.dispose();
        throw new UsageError(`${key} '${runDir}': its saved weight '${v.name}' does not fit ${cfg.model.arch} as configured there; the run folder is damaged.`);
      }
      v.variable.assign(w);
    }
    return { net, cfg, summary };
  } finally {
    for (const t of saved.values()) t.dispose();
  }
}

/**
 * The penultimate features of a run's network on every train and test
 * example of `data` (the clustering input of data.relabel cluster:K), with
 * the level that run trained at. The images are seen through the input
 * normalisation that run trained with (its split.json `normalize`; none when
 * it has none), whatever `data`'s own normalisation is at the time: the
 * network's features are only meaningful on the inputs it was trained on
 * (issue 21, item 3). `data`'s normalisation is restored before returning.
 */
export async function runFeatures(runDir: string, data: Dataset, key: string): Promise<{ train: Float32Array; test: Float32Array; dim: number; levelSpec: string; runId: string | null }> {
  const { net, cfg } = loadRunNetwork(runDir, data.shape, key);
  const own = { train: data.train.x.norm, test: data.test.x.norm };
  try {
    const norm = runNormalization(runDir, cfg, key);
    data.train.x.norm = norm;
    data.test.x.norm = norm;
    const all = (e: Examples) => Array.from(e.y, (_, i) => i);
    const tr = await penultimateFeatures(net, data.train, all(data.train), data.shape);
    const te = await penultimateFeatures(net, data.test, all(data.test), data.shape);
    const runId = readRunFolder(runDir).meta.run_id;
    return { train: tr.x, test: te.x, dim: tr.dim, levelSpec: primaryLevelSpec(cfg.train.level), runId: typeof runId === 'string' ? runId : null };
  } finally {
    data.train.x.norm = own.train;
    data.test.x.norm = own.test;
    net.dispose();
  }
}

/** The input normalisation a finished run trained with: its split.json `normalize` (absent = none). */
function runNormalization(runDir: string, cfg: Config, key: string): Normalization {
  const rec = readSplitRecord(runDir) as { normalize?: Normalization };
  if (rec.normalize) return { mean: rec.normalize.mean.slice(), std: rec.normalize.std.slice() };
  if (cfg.data.normalize !== 'none') {
    throw new UsageError(`${key} '${runDir}' trained with data.normalize=${cfg.data.normalize}, but its split.json records no normalisation; its features cannot be reproduced. Use a run made by this version of granular.`);
  }
  return null;
}
