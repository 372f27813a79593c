import { Config } from '../config/schema';
import { UsageError } from '../util/errors';
import { Catalog, Log, materialize, stderrLog } from './catalog';
import { imagefolderCatalog } from './imagefolder';
import { inatCatalog } from './inat';
import { omniglotCatalog } from './omniglot';
import { loadSynthetic } from './synthetic';
import { wordnetCatalog } from './wordnet';
import { Dataset } from './types';

/** The hierarchy and image list of a file-based format, before decoding. */
export function loadCatalog(cfg: Config, log: Log = stderrLog): Catalog {
  switch (cfg.data.format) {
    case 'imagefolder':
      return imagefolderCatalog(cfg);
    case 'omniglot':
      return omniglotCatalog(cfg);
    case 'wordnet':
      return wordnetCatalog(cfg);
    case 'inat2021':
      return inatCatalog(cfg, log);
    default:
      throw new UsageError(`data.format '${cfg.data.format}' is not a file-based format.`);
  }
}

/** Load the configured dataset, fully validated; bad data is a UsageError (exit 2). */
export async function loadDataset(cfg: Config, log: Log = stderrLog): Promise<Dataset> {
  if (cfg.data.format === 'synthetic') {
    if (cfg.data.include.length || cfg.data.exclude.length || cfg.data.relabel !== null) {
      throw new UsageError('data.include, data.exclude and data.relabel apply to file-based formats; synthetic data is shaped with data.synthetic.*.');
    }
    return loadSynthetic(cfg);
  }
  return materialize(loadCatalog(cfg, log), cfg, log);
}
