import { Config } from '../config/schema';
import { Log } from './catalog';
import { loadDataset } from './index';
import { Split } from './split';
import { Dataset, hashHex, SourceOverlap } from './types';

/** What the overlap check needs of the source run's split.json. */
export interface SourceSplitRecord {
  train: string[];
  /** Content hashes of the source's training images, aligned with `train` (runs since the record cache). */
  hashes?: { train?: string[] };
}

/**
 * Fine-tuning on other data than the source run's (Dar et al.; ImageNet-21k ->
 * 1k): count the target images whose file content is in the source run's
 * training set. Reported, not refused: some overlap can be intended. The
 * source's hashes come from its split.json; only a run recorded before hashes
 * were kept there has its dataset loaded again. Null when either side has no
 * content hashes (synthetic data).
 */
export async function sourceOverlap(sourceCfg: Config, rec: SourceSplitRecord, target: Dataset, split: Split, log: Log): Promise<SourceOverlap | null> {
  if (sourceCfg.data.format === 'synthetic' || !target.train.hashes || !target.test.hashes) return null;
  const seen = new Set<string>();
  if (rec.hashes?.train?.length === rec.train.length) {
    for (const h of rec.hashes.train) seen.add(h);
  } else {
    log(`the source run's split.json records no content hashes (made by an older granular): loading its dataset to compare`);
    const src = await loadDataset(sourceCfg, () => {});
    if (!src.train.hashes) return null;
    const index = new Map(src.train.ids.map((id, i) => [id, i]));
    for (const id of rec.train) {
      const i = index.get(id);
      if (i !== undefined) seen.add(hashHex(src.train.hashes, i));
    }
  }
  const testHits = split.test.filter((i) => seen.has(hashHex(target.test.hashes!, i)));
  const trainHits = split.train.filter((i) => seen.has(hashHex(target.train.hashes!, i)));
  const out: SourceOverlap = {
    test_in_source_train: testHits.length,
    train_in_source_train: trainHits.length,
    test_examples: testHits.slice(0, 5).map((i) => target.test.ids[i]),
    source_train_checked: seen.size,
  };
  log(
    `overlap with the source run's training set (by content hash): ${testHits.length} of ${split.test.length} test and ${trainHits.length} of ${split.train.length} training images` +
      (testHits.length ? `, e.g. ${out.test_examples.join(', ')}` : ''),
  );
  return out;
}
