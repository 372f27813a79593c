/**
 * Convergence of a training run (DESIGN.md "Convergence": more training with
 * the same recipe would not change the result), as pure functions of the
 * per-epoch training loss, the per-epoch learning rate and the final training
 * accuracy: no tensors.
 *
 * The rule (README "The run folder", where summary.json's converged is described), for E epochs with mean
 * training losses L_1..L_E and learning rates lr_1..lr_E (lr at each epoch's
 * last step), window w = max(3, floor(E / 10)):
 * 1. the run is longer than its window (E > w) and its loss fell:
 *    D = L_1 - L_E > 0;
 * 2. plateau: the losses of the last w epochs span at most PLATEAU_TOL x D
 *    (max - min over the window), so the loss has flattened relative to how
 *    far it fell over the run: a slow, steady descent (a tiny learning rate,
 *    a run stopped mid-descent) spans about w / E of its drop and fails;
 * 3. not an annealing artefact: with e* the last epoch whose learning rate is
 *    at least LR_FLOOR x the run's largest, the w epochs ending at e* must be
 *    a plateau by the same measure, so a loss that only stopped moving
 *    because the schedule took the learning rate to ~0 fails;
 * 4. not at chance: the final training accuracy (train_acc_final) is above
 *    the majority-class rate p0 by more than 3 binomial standard errors,
 *    sqrt(p0 (1 - p0) / n) (a run that learned nothing is never converged).
 */

/** The plateau of rule 2 and 3: the window's losses span at most this fraction of the run's drop. */
export const PLATEAU_TOL = 0.05;
/** Rule 3: epochs whose learning rate is below this fraction of the run's largest count as annealed. */
export const LR_FLOOR = 0.1;

/** Epochs the rule looks back over: max(3, floor(epochs / 10)). */
export function convergenceWindow(epochs: number): number {
  return Math.max(3, Math.floor(epochs / 10));
}

/** What the rule reads. `lrs` (one per epoch) may be omitted: a constant learning rate. */
export interface ConvergenceEvidence {
  /** Mean training loss of epochs 1..E, in order. */
  losses: readonly number[];
  /** Learning rate of epochs 1..E (at each epoch's last step). */
  lrs?: readonly number[];
  /** train_acc_final, a fraction; omitted = rule 4 not applied (e.g. while training). */
  trainAcc?: number;
  /** The majority-class rate of the training labels (chance for a classifier that ignores its input). */
  chance?: number;
  /** Training images train_acc_final was measured on (the binomial standard error's n). */
  n?: number;
}

/** The verdict and, when false, why (one line, for summary.json `converged_reason`). */
export interface ConvergenceVerdict {
  converged: boolean;
  reason: string;
}

const span = (xs: readonly number[]) => Math.max(...xs) - Math.min(...xs);

/** Rules 1-3 over a window of `w` epochs. */
function plateau(losses: readonly number[], lrs: readonly number[] | undefined, w: number): ConvergenceVerdict {
  const E = losses.length;
  if (!losses.every(Number.isFinite)) return { converged: false, reason: 'a non-finite training loss' };
  if (E <= w) return { converged: false, reason: `${E} epoch(s): too short to tell (the plateau window is ${w} epochs)` };
  const drop = losses[0] - losses[E - 1];
  if (!(drop > 0)) return { converged: false, reason: `the training loss did not fall (${losses[0].toPrecision(4)} -> ${losses[E - 1].toPrecision(4)})` };
  const last = span(losses.slice(E - w));
  if (last > PLATEAU_TOL * drop) {
    return { converged: false, reason: `still descending: the last ${w} epochs' losses span ${(last / drop * 100).toFixed(1)} % of the drop over the run (plateau: <= ${PLATEAU_TOL * 100} %)` };
  }
  if (lrs && lrs.length === E) {
    const peak = Math.max(...lrs);
    let eStar = E - 1;
    while (eStar >= 0 && !(lrs[eStar] >= LR_FLOOR * peak)) eStar--;
    if (eStar < w - 1) return { converged: false, reason: `the learning rate was below ${LR_FLOOR} x its peak for all but ${eStar + 1} epoch(s)` };
    if (eStar < E - 1) {
      const before = span(losses.slice(eStar + 1 - w, eStar + 1));
      if (before > PLATEAU_TOL * drop) {
        return { converged: false, reason: `the loss flattened only as the learning rate annealed: the ${w} epochs up to epoch ${eStar + 1} (the last at >= ${LR_FLOOR} x the peak rate) span ${(before / drop * 100).toFixed(1)} % of the drop` };
      }
    }
  }
  return { converged: true, reason: '' };
}

/**
 * The convergence verdict of a finished run (rules 1-4 above). Pure; any
 * argument may describe a run of any length.
 */
export function convergence(ev: ConvergenceEvidence): ConvergenceVerdict {
  const p = plateau(ev.losses, ev.lrs, convergenceWindow(ev.losses.length));
  if (!p.converged) return p;
  if (ev.trainAcc !== undefined && ev.chance !== undefined) {
    const n = Math.max(1, ev.n ?? 1);
    const limit = ev.chance + 3 * Math.sqrt((ev.chance * (1 - ev.chance)) / n);
    if (!(ev.trainAcc > limit)) {
      return { converged: false, reason: `at chance: train_acc_final ${ev.trainAcc.toFixed(3)} is within 3 standard errors of the majority-class rate ${ev.chance.toFixed(3)} (n = ${n})` };
    }
  }
  return { converged: true, reason: '' };
}

/** `converged` for losses (and learning rates) alone: rules 1-3. */
export function hasConverged(losses: readonly number[], lrs?: readonly number[]): boolean {
  return plateau(losses, lrs, convergenceWindow(losses.length)).converged;
}

/**
 * train.until_converged's stop after an epoch: rules 1-3 over a window of
 * k + 1 epochs, k = max(patience, w - 1) and w the convergence window of the
 * epochs so far. A longer window spans at least as much as the last w epochs
 * of it, so a run stopped by this rule passes rules 1-3 of hasConverged
 * (rule 4, chance, is judged on the final network). `losses`, `lrs` as above.
 */
export function plateauReached(losses: readonly number[], patience: number, lrs?: readonly number[]): boolean {
  const k = Math.max(patience, convergenceWindow(losses.length) - 1);
  return plateau(losses, lrs, k + 1).converged;
}

/** The majority-class rate of `labels` over `k` classes (0 for none). */
export function majorityRate(labels: ArrayLike<number>, k: number): number {
  if (!labels.length) return 0;
  const counts = new Array<number>(k).fill(0);
  for (let i = 0; i < labels.length; i++) counts[labels[i]]++;
  return Math.max(...counts) / labels.length;
}
