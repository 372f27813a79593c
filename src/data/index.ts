import { checkDataRoot } from '../config/data-root';
import { Config } from '../config/schema';
import { UsageError } from '../util/errors';
import { Catalog, listCatalog, LoadOptions, Log, materialize, stderrLog } from './cache/catalog';
import { cifarCatalog } from './formats/cifar';
import { imagefolderCatalog } from './formats/imagefolder';
import { inatCatalog } from './formats/inat';
import { omniglotCatalog } from './formats/omniglot';
import { clusterRelabelDataset, relabel } from './labels/relabel';
import { loadSynthetic, syntheticChannels } from './formats/synthetic';
import { wordnetCatalog } from './formats/wordnet';
import { Dataset } from './types';

/** The hierarchy and image list of a file-based format, before decoding. */
export function loadCatalog(cfg: Config, log: Log = stderrLog): Catalog {
  checkDataRoot(cfg);
  switch (cfg.data.format) {
    case 'imagefolder':
      return imagefolderCatalog(cfg);
    case 'omniglot':
      return omniglotCatalog(cfg);
    case 'wordnet':
      return wordnetCatalog(cfg);
    case 'inat2021':
      return inatCatalog(cfg, log);
    case 'cifar':
      return cifarCatalog(cfg);
    default:
      throw new UsageError(`data.format '${cfg.data.format}' is not a file-based format.`);
  }
}

/**
 * The hierarchy and the images per part of the configured dataset as a run
 * would see them (`granular hierarchy`): file-based formats of more than
 * HIERARCHY_DECODE_MAX images are listed, never decoded, so no record cache
 * is written; unreadable images and the dataset's own duplicates
 * (data.duplicates) are then found only when a run reads the files, and
 * `listed` says the counts are the listing's. Smaller ones are loaded.
 * data.relabel cluster:K needs a trained network's features, so it loads.
 */
export async function listDataset(cfg: Config, log: Log = stderrLog): Promise<{ hierarchy: Dataset['hierarchy']; train: { y: Int32Array }; test: { y: Int32Array }; skipped: number | null; listed: boolean }> {
  const load = async () => {
    const d = await loadDataset(cfg, log);
    return { hierarchy: d.hierarchy, train: d.train, test: d.test, skipped: d.skipped, listed: false };
  };
  if (cfg.data.format === 'synthetic' || cfg.data.relabel?.startsWith('cluster:')) return load();
  const cat = listCatalog(loadCatalog(cfg, log), cfg);
  // A small dataset decodes in about a second: then the counts are exact (unreadable images, duplicates).
  if (cat.train.ids.length + cat.test.ids.length <= HIERARCHY_DECODE_MAX) return load();
  return { hierarchy: cat.hierarchy, train: { y: cat.train.cls }, test: { y: cat.test.cls }, skipped: null, listed: true };
}

/** Datasets up to this many images are decoded by `granular hierarchy` (exact counts); larger ones are only listed. */
export const HIERARCHY_DECODE_MAX = 2000;

/** Load the configured dataset, fully validated; bad data is a UsageError (exit 2). */
export async function loadDataset(cfg: Config, log: Log = stderrLog, opts: LoadOptions = {}): Promise<Dataset> {
  checkDataRoot(cfg);
  if (cfg.data.relabel_from !== null && !cfg.data.relabel?.startsWith('cluster:')) {
    throw new UsageError(`data.relabel_from is set but data.relabel is ${JSON.stringify(cfg.data.relabel)}; it names the run whose features data.relabel cluster:K clusters. Remove it, or set data.relabel=cluster:K.`);
  }
  const d = await loadLabelled(cfg, log, opts);
  // cluster:K needs the decoded images and a trained network, so it comes last.
  return cfg.data.relabel?.startsWith('cluster:') ? clusterRelabelDataset(d, cfg) : d;
}

async function loadLabelled(cfg: Config, log: Log, opts: LoadOptions): Promise<Dataset> {
  if (cfg.data.format === 'synthetic') {
    if (cfg.data.include.length || cfg.data.exclude.length) {
      throw new UsageError('data.include and data.exclude apply to file-based formats; synthetic data is shaped with data.synthetic.* (data.relabel works on both).');
    }
    if ((cfg.data.relabel?.startsWith('random_split:') || cfg.data.relabel?.startsWith('cluster:')) && cfg.eval.ood_synthetic.length) {
      throw new UsageError(`data.relabel ${cfg.data.relabel} with eval.ood_synthetic: the shifted test sets have no pseudo-class labels. Leave one of them out (fine-tuning runs can set data.relabel=null).`);
    }
    const auto = cfg.data.channels === 'auto';
    cfg.data.channels = syntheticChannels(cfg);
    const d: Dataset = { ...loadSynthetic(cfg), channels: { channels: cfg.data.channels, auto, reason: auto ? 'synthetic data is drawn in grey' : 'set in the config' } };
    if (cfg.data.relabel === null || cfg.data.relabel.startsWith('cluster:')) return d;
    const r = relabel(d.hierarchy, cfg, [d.train.y, d.test.y]);
    return { ...d, hierarchy: r.hierarchy, train: { ...d.train, y: r.labels[0] }, test: { ...d.test, y: r.labels[1] } };
  }
  return materialize(loadCatalog(cfg, log), cfg, log, opts);
}
