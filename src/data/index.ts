import { Config } from '../config/schema';
import { UsageError } from '../util/errors';
import { loadSynthetic } from './synthetic';
import { Dataset } from './types';

/** Load the configured dataset, fully validated; bad data is a UsageError (exit 2). */
export async function loadDataset(cfg: Config): Promise<Dataset> {
  switch (cfg.data.format) {
    case 'synthetic':
      return loadSynthetic(cfg);
    default:
      throw new UsageError(
        `data.format '${cfg.data.format}' is not available in this version of granular; only 'synthetic' is. ` +
          `Use --set data.format=synthetic, or see README.md for the formats planned.`,
      );
  }
}
