import { distance } from 'fastest-levenshtein';

/**
 * Errors the CLI turns into exit codes. A UsageError means the user asked for
 * something we refuse before any run folder exists (exit 2); anything else that
 * escapes a run is a run failure (exit 1) recorded in summary.json.
 */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Raised by the training loop when the run must stop (NaN loss, ...); exit 1. */
export class RunFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RunFailure';
  }
}

/**
 * The candidate closest to `word` by Levenshtein distance (fastest-levenshtein),
 * if it is close enough to be a plausible typo: at most max(2, |word|/3) edits.
 */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    // Compare the last path segment too, so `train.epoch` finds `train.epochs`
    // and `epochs` alone finds `train.epochs`.
    const d = Math.min(distance(word, c), distance(word, c.split('.').pop()!) + 1);
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}
