import { Config } from '../../config/schema';
import { recordMeanStd } from '../cache/records';
import { IMAGENET_MEAN, IMAGENET_STD, Normalization } from '../cache/store';
import { Split } from './split';
import { Dataset } from '../types';

/**
 * The per-channel input normalisation of data.normalize for this run:
 * - `none`: pixels stay in [0, 1];
 * - `imagenet`: torchvision's ImageNet mean and std (one channel: their averages);
 * - `dataset`: the mean and std over every pixel of the training split (the
 *   stored images, in [0, 1]; for the record cache from per-image sums kept at
 *   decode time, so no image is read). A constant channel keeps std 1.
 * Deterministic for a dataset and split, so --resume and `granular eval`
 * compute the same values; split.json records them.
 */
export function inputNormalization(cfg: Config, data: Dataset, split: Split): Normalization {
  const C = data.shape[2];
  switch (cfg.data.normalize) {
    case 'none':
      return null;
    case 'imagenet': {
      const avg = (v: number[]) => [v.reduce((a, b) => a + b, 0) / v.length];
      return C === 3 ? { mean: IMAGENET_MEAN.slice(), std: IMAGENET_STD.slice() } : { mean: avg(IMAGENET_MEAN), std: avg(IMAGENET_STD) };
    }
    case 'dataset': {
      const spec = data.train.x.spec();
      let ms: { mean: number[]; std: number[] };
      if (spec.kind === 'records') {
        ms = recordMeanStd(spec.loc, Int32Array.from(split.train, (i) => spec.rows[i]));
      } else {
        // In memory: stream the training split in chunks, float64 sums.
        const s = new Float64Array(2 * C);
        const chunk = 256;
        const buf = new Float32Array(chunk * data.train.x.size);
        for (let from = 0; from < split.train.length; from += chunk) {
          const n = Math.min(chunk, split.train.length - from);
          data.train.x.read(split.train, from, n, buf, true);
          for (let j = 0; j < n * data.train.x.size; j += C) {
            for (let c = 0; c < C; c++) {
              s[c] += buf[j + c];
              s[C + c] += buf[j + c] * buf[j + c];
            }
          }
        }
        const count = (split.train.length * data.train.x.size) / C;
        const mean = Array.from({ length: C }, (_, c) => s[c] / count);
        ms = { mean, std: Array.from({ length: C }, (_, c) => Math.sqrt(Math.max(0, s[C + c] / count - mean[c] * mean[c]))) };
      }
      return { mean: ms.mean, std: ms.std.map((v) => (v > 1e-8 ? v : 1)) };
    }
  }
}

/** Every part of the dataset is seen through the same normalisation (the training split's). */
export function applyNormalization(data: Dataset, norm: Normalization): void {
  data.train.x.norm = norm;
  data.test.x.norm = norm;
}
