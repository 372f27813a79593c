/**
 * A dataset's own duplicates: test images whose file content is also in the
 * dataset's training pool, and identical test images carrying different
 * labels. Public datasets hold a few (CIFAR-100, Fashion-MNIST, the GTSRB
 * traffic signs): scoring a network on a test image it trained on inflates
 * test accuracy, and a test image with two labels is wrong under one of
 * them. data.duplicates decides what happens to them, the same way in every
 * stage, so the fine-tuning leak check (./overlap.ts) sees only real leaks.
 *
 * "Same content" is the same file bytes (the content hash of decode.ts,
 * 64 bits of SHA-1), as for the leak check: a re-encoded copy is not found.
 */
import { Config } from '../../config/schema';
import { UsageError } from '../../util/errors';
import { HASH_BYTES } from '../cache/records';

/** What data.duplicates found and did; split.json and summary.json record it, start lines print it. */
export interface DuplicatesRecord {
  policy: Config['data']['duplicates'];
  /** Test images whose content is also in the training pool (training and validation images before any cap). */
  test_in_train: number;
  /** Test images whose content is shared by a test image with another label (and not already counted above). */
  test_label_conflicts: number;
  /** Test images removed from the test set (drop_test: both kinds; keep: 0). */
  dropped: number;
  /** Training-pool images whose content another training-pool image repeats (reported, never dropped: they only weigh that picture more). */
  train_repeats: number;
  /** drop_test found only duplicates in the test set and kept them (dropping would leave no test set). */
  kept_all?: boolean;
  /** A few of them: the test image and what it duplicates. */
  examples: Array<{ test: string; same_as: string; kind: 'train' | 'test_other_label' }>;
}

/** The per-image 64-bit content hashes as one BigUint64Array (the HASH_BYTES bytes read little-endian). */
function keys(hashes: Uint8Array, n: number): BigUint64Array {
  const out = new BigUint64Array(n);
  new Uint8Array(out.buffer).set(hashes.subarray(0, n * HASH_BYTES));
  return out;
}

/** Index of the first element >= x in sorted `a`. */
function lowerBound(a: BigUint64Array, x: bigint): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export interface DuplicatesFound {
  record: DuplicatesRecord;
  /** Per test image: 1 when it is a duplicate of either kind. */
  duplicate: Uint8Array;
  /** Per test image: 1 when its content is in the training pool (the leak check leaves these to this policy). */
  inTrain: Uint8Array;
}

/**
 * Find the duplicates of one dataset. `train`/`test`: the content hashes
 * (HASH_BYTES each), labels (dataset class index) and ids of the usable
 * images. O((n + m) log n) time, 8 bytes per image of extra memory: no
 * string per image (half a million images must stay cheap).
 */
export function findDuplicates(
  train: { hashes: Uint8Array; y: Int32Array; ids: readonly string[] },
  test: { hashes: Uint8Array; y: Int32Array; ids: readonly string[] },
  policy: Config['data']['duplicates'],
): DuplicatesFound {
  const n = train.y.length;
  const m = test.y.length;
  const trainKeys = keys(train.hashes, n);
  const sortedTrain = trainKeys.slice().sort();
  let trainRepeats = 0;
  for (let i = 1; i < n; i++) if (sortedTrain[i] === sortedTrain[i - 1]) trainRepeats++;
  const testKeys = keys(test.hashes, m);
  const duplicate = new Uint8Array(m);
  const inTrain = new Uint8Array(m);
  const examples: DuplicatesRecord['examples'] = [];
  let testInTrain = 0;
  for (let j = 0; j < m; j++) {
    const at = lowerBound(sortedTrain, testKeys[j]);
    if (at < n && sortedTrain[at] === testKeys[j]) {
      inTrain[j] = 1;
      duplicate[j] = 1;
      testInTrain++;
      if (examples.length < 5) examples.push({ test: test.ids[j], same_as: train.ids[trainKeys.indexOf(testKeys[j])], kind: 'train' });
    }
  }
  // Identical test images with different labels: group equal hashes.
  const order = Array.from({ length: m }, (_, j) => j).sort((a, b) => (testKeys[a] < testKeys[b] ? -1 : testKeys[a] > testKeys[b] ? 1 : a - b));
  let conflicts = 0;
  for (let s = 0; s < m; ) {
    let e = s + 1;
    while (e < m && testKeys[order[e]] === testKeys[order[s]]) e++;
    let mixed = false;
    for (let k = s + 1; k < e; k++) if (test.y[order[k]] !== test.y[order[s]]) mixed = true;
    if (mixed) {
      for (let k = s; k < e; k++) {
        const j = order[k];
        if (duplicate[j]) continue;
        duplicate[j] = 1;
        conflicts++;
        const other = order[k === s ? s + 1 : s];
        if (examples.length < 5) examples.push({ test: test.ids[j], same_as: test.ids[other], kind: 'test_other_label' });
      }
    }
    s = e;
  }
  const found = testInTrain + conflicts;
  return {
    record: { policy, test_in_train: testInTrain, test_label_conflicts: conflicts, dropped: policy === 'drop_test' ? found : 0, train_repeats: trainRepeats, examples },
    duplicate,
    inTrain,
  };
}

/** "3 test images have the same content as training images (test/a.png = train/b.png, ...)" and so on: what the start lines say. */
export function describeDuplicates(r: DuplicatesRecord): string {
  const parts: string[] = [];
  const some = (kind: 'train' | 'test_other_label') =>
    r.examples
      .filter((e) => e.kind === kind)
      .slice(0, 3)
      .map((e) => `${e.test} = ${e.same_as}`)
      .join(', ');
  if (r.test_in_train) parts.push(`${r.test_in_train} test image(s) have the same file content as a training image (${some('train')}${r.test_in_train > 3 ? ', ...' : ''})`);
  if (r.test_label_conflicts) parts.push(`${r.test_label_conflicts} test image(s) are identical to a test image with another label (${some('test_other_label')}${r.test_label_conflicts > 3 ? ', ...' : ''})`);
  return parts.join('; ');
}

/** The message of data.duplicates=refuse. */
export function refuseDuplicates(r: DuplicatesRecord, format: string): UsageError {
  return new UsageError(
    `the ${format} data holds its own duplicates: ${describeDuplicates(r)}. data.duplicates is refuse. ` +
      `Remove the test copies from the dataset, or set data.duplicates=drop_test (take them out of the test set) or keep (score them as they are).`,
  );
}
