import { Config } from '../../config/schema';
import { UsageError } from '../../util/errors';
import { Log } from '../cache/catalog';
import { loadDataset } from '..';
import { Split, SplitRecord } from './split';
import { Dataset, hashHex, SourceOverlap } from '../types';

/**
 * The content hashes of the images a source run trained on: from its
 * split.json, or, for runs made before split.json recorded them, by reading
 * its data again (`same`: the target data when it is the source's, so nothing
 * is read twice). Null for synthetic data (no image files).
 */
async function sourceTrainHashes(sourceCfg: Config, rec: SplitRecord, same: Dataset | null, log: Log): Promise<Set<string> | null> {
  if (rec.hashes?.train?.length === rec.train.length) return new Set(rec.hashes.train);
  if (sourceCfg.data.format === 'synthetic') return null;
  if (!same) log(`the source run's split.json records no content hashes (made by an older granular): loading its dataset to compare`);
  const src = same ?? (await loadDataset(sourceCfg, () => {}));
  if (!src.train.hashes) return null;
  const index = new Map(src.train.ids.map((id, i) => [id, i]));
  const seen = new Set<string>();
  for (const id of rec.train) {
    const i = index.get(id.normalize('NFC'));
    if (i !== undefined) seen.add(hashHex(src.train.hashes, i));
  }
  return seen;
}

/**
 * Fine-tuning from a source run: the target images whose file content is in
 * the source run's training set, by content hash (so the name of the folder
 * or file does not matter). A test set that holds any of them is refused
 * (DESIGN.md, "Datasets and hierarchies": the fine-tuned network would be
 * scored partly on images its weights were trained on): a UsageError naming
 * them. Training images in common are reported only (fine-tuning on other
 * data that shares some images can be intended; on the same data they all
 * are). `sameData`: the target data is the source's, so the source's split is
 * reused and only the report of other data is left out. Returns the overlap,
 * or null for data without image files (synthetic).
 */
export async function checkSourceOverlap(
  source: { dir: string; cfg: Config; split: SplitRecord },
  target: Dataset,
  split: Split,
  sameData: boolean,
  log: Log,
): Promise<SourceOverlap | null> {
  if (!target.train.hashes || !target.test.hashes) return null;
  const seen = await sourceTrainHashes(source.cfg, source.split, sameData ? target : null, log);
  if (!seen) return null;
  // A test image whose content is also in the target's own training pool is one of the dataset's own
  // duplicates: data.duplicates decided about it (drop_test took it out; keep kept it on purpose), in this
  // stage as in the source's. What is left is a real leak: a re-split, another data.seed, other data.
  const ownDuplicate = (i: number) => target.testInTrain?.[i] === 1;
  const testHits = split.test.filter((i) => !ownDuplicate(i) && seen.has(hashHex(target.test.hashes!, i)));
  const trainHits = split.train.filter((i) => seen.has(hashHex(target.train.hashes!, i)));
  const out: SourceOverlap = {
    test_in_source_train: testHits.length,
    train_in_source_train: trainHits.length,
    test_examples: testHits.slice(0, 5).map((i) => target.test.ids[i]),
    source_train_checked: seen.size,
  };
  if (testHits.length) {
    const names = testHits.map((i) => target.test.ids[i]);
    throw new UsageError(
      `${testHits.length} of the ${split.test.length} fine-tuning test images are images the source run '${source.dir}' trained on (same file content): ` +
        `${names.slice(0, 10).join(', ')}${names.length > 10 ? `, and ${names.length - 10} more` : ''}. A test set that overlaps the source's training set ` +
        `would score the network on images it has learned. Fine-tune on the source's own split (leave out the data.* settings that change it: data.seed, ` +
        `data.test_fraction, ...), or take these images out of the test set.`,
    );
  }
  if (!sameData) {
    log(`overlap with the source run's training set (by content hash): 0 of ${split.test.length} test and ${trainHits.length} of ${split.train.length} training images`);
  }
  return out;
}
