/**
 * Convergence of a training run (DESIGN.md "Convergence"), as pure functions
 * of the per-epoch training loss: no tensors.
 */

/** Epochs the rule looks back over: max(3, floor(epochs / 10)). */
export function convergenceWindow(epochs: number): number {
  return Math.max(3, Math.floor(epochs / 10));
}

/**
 * `converged`: the training loss of the last w = max(3, floor(epochs/10))
 * epochs changed by less than 1 % of its first value per epoch, i.e. every one
 * of the w - 1 epoch-to-epoch changes inside that window is below
 * `tolerance` x losses[0]. `losses` holds the mean training loss of epochs
 * 1..E in order. False with fewer than w epochs (too short to tell), and for a
 * non-finite loss.
 */
export function hasConverged(losses: readonly number[], tolerance = 0.01): boolean {
  const w = convergenceWindow(losses.length);
  if (losses.length < w || !losses.every(Number.isFinite)) return false;
  const limit = tolerance * Math.abs(losses[0]);
  for (let e = losses.length - w + 1; e < losses.length; e++) {
    if (Math.abs(losses[e] - losses[e - 1]) >= limit) return false;
  }
  return true;
}

/**
 * train.until_converged's stop after an epoch: each of the last k
 * epoch-to-epoch changes of the training loss is below `tolerance` x the first
 * epoch's loss, with k = max(patience, w - 1) and w the convergence window of
 * the epochs so far, so a run stopped by this rule is `converged` by
 * hasConverged. Needs k + 1 epochs. `losses` as above.
 */
export function plateauReached(losses: readonly number[], patience: number, tolerance = 0.01): boolean {
  const k = Math.max(patience, convergenceWindow(losses.length) - 1);
  if (losses.length < k + 1 || !losses.every(Number.isFinite)) return false;
  const limit = tolerance * Math.abs(losses[0]);
  for (let e = losses.length - k; e < losses.length; e++) {
    if (Math.abs(losses[e] - losses[e - 1]) >= limit) return false;
  }
  return true;
}
