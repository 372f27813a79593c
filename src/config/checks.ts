import { UsageError } from '../util/errors';
import { Config } from './schema';

const SYNTHETIC_SHIFTS = ['weak_common', 'more_noise', 'all_hard'];

/**
 * Evaluation settings that do not apply to the run's data: refused with what to
 * use instead (pretrain, finetune and eval all check here, before any work).
 * `what` names the run in messages (`run 'runs/x'` for eval).
 */
export function checkEvalApplies(cfg: Config, what = 'this run'): void {
  const synthetic = cfg.data.format === 'synthetic';
  if (cfg.eval.ood_root !== null && synthetic) throw new UsageError(`eval.ood_root holds image folders; ${what} uses synthetic data, which has no images to compare with. Use eval.ood_synthetic (${SYNTHETIC_SHIFTS.join(', ')}).`);
  if (cfg.eval.ood.length && synthetic) {
    throw new UsageError(`eval.ood corrupts images in [0, 1]; ${what} uses synthetic data (feature patterns). Use eval.ood_synthetic (${SYNTHETIC_SHIFTS.join(', ')}) for synthetic covariate shift.`);
  }
  if (cfg.eval.ood_synthetic.length && !synthetic) {
    throw new UsageError(
      `eval.ood_synthetic shifts the synthetic data generator; ${what} uses data.format '${cfg.data.format}'. ` +
        `For image data use eval.ood (gaussian_noise, gaussian_blur, contrast, brightness, jpeg, pixelate) or eval.ood_root (an external test folder).`,
    );
  }
}
