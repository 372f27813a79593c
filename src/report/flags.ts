import * as fs from 'node:fs';
import * as path from 'node:path';
import * as rd from '../runs/rundir';
import { Group } from './table';
import { RunRecord } from './runs';

/**
 * Fair-comparison flags (DESIGN.md, Convergence; README.md "Fair comparisons"): a report must not let an
 * underfit or differently trained pretraining run pass for an effect of its
 * label level. For each run, the run that made its features is its source
 * (a fine-tuning run's `from`; a pretraining run and a from-scratch baseline
 * are their own source, so a scratch baseline trained on a smaller budget is
 * flagged like any unequal budget). README section "Fair comparisons"
 * documents the flags.
 */
export interface SourceFacts {
  dir: string;
  level: string;
  /** summary.json `converged`; undefined for runs written before it existed. */
  converged?: boolean;
  /** Accuracy of the final network on its own training images at its level. */
  trainAcc?: number;
  /** Training budget: epochs trained x training images. */
  budget?: number;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

function readSummary(dir: string): Record<string, unknown> | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, rd.FILES.summary), 'utf8'));
  } catch {
    return null;
  }
}

/**
 * The facts a report needs about the run whose features `run` used: its
 * `from` run, else the run itself (a pretraining run, a from-scratch
 * baseline); null when unreadable.
 */
export function sourceFacts(run: RunRecord): SourceFacts | null {
  let dir = run.dir;
  let s = run.summary;
  if (typeof run.meta.from === 'string') {
    dir = path.resolve(run.dir, run.meta.from);
    s = readSummary(dir);
  }
  if (!s) return null;
  const epochs = num(s.epochs_trained) ?? num(s.epochs);
  const images = num(s.train_images);
  return {
    dir,
    level: String(s.level ?? '?'),
    converged: typeof s.converged === 'boolean' ? s.converged : undefined,
    trainAcc: num(s.train_acc_final),
    budget: epochs !== undefined && images !== undefined ? epochs * images : undefined,
  };
}

export interface FlagOptions {
  /** A source whose train_acc_final is below this did not learn its level (default 0.8). */
  underfitBelow: number;
}

/** Every distinct source among the runs, by folder. */
function sources(runs: readonly RunRecord[]): SourceFacts[] {
  const byDir = new Map<string, SourceFacts>();
  for (const r of runs) {
    const f = sourceFacts(r);
    if (f) byDir.set(f.dir, f);
  }
  return [...byDir.values()];
}

/**
 * The flags of one table row: sources that did not converge, sources that did
 * not learn their own level (train_acc_final below `underfitBelow`), and,
 * when `budgets` (all the table's source budgets) hold more than one value,
 * this row's source budget. Empty when nothing is wrong.
 */
export function rowFlags(g: Group, o: FlagOptions, budgetsDiffer: boolean): string[] {
  const src = sources(g.runs);
  if (!src.length) return [];
  const out: string[] = [];
  const notConv = src.filter((s) => s.converged === false);
  if (notConv.length) out.push(`source not converged (${notConv.length}/${src.length})`);
  const underfit = src.filter((s) => s.trainAcc !== undefined && s.trainAcc < o.underfitBelow);
  if (underfit.length) {
    const accs = underfit.map((s) => belowText(s.trainAcc!, o.underfitBelow)).join(', ');
    out.push(`source underfit: train_acc_final ${accs} < ${o.underfitBelow} (${underfit.length}/${src.length})`);
  }
  if (budgetsDiffer) {
    const b = [...new Set(src.map((s) => s.budget).filter((v): v is number => v !== undefined))];
    if (b.length) out.push(`source budget ${b.map((v) => v.toLocaleString('en-US')).join(' / ')} images`);
  }
  return out;
}

/**
 * `v` printed with enough digits that `v < limit` reads true: 4 decimals as in
 * the tables (0.7967, not 0.80 for a limit of 0.8), more where 4 would round
 * up to the limit.
 */
export function belowText(v: number, limit: number): string {
  for (let d = 4; d < 12; d++) if (Number(v.toFixed(d)) < limit) return v.toFixed(d);
  return String(v);
}

/** The distinct training budgets of all sources in the table (epochs x images). */
export function sourceBudgets(runs: readonly RunRecord[]): number[] {
  return [...new Set(sources(runs).map((s) => s.budget).filter((v): v is number => v !== undefined))].sort((a, b) => a - b);
}

/** Lines for report.md under the table: what the flags mean, when any is raised. */
export function flagNotes(groups: readonly Group[], o: FlagOptions): string[] {
  const all = groups.flatMap((g) => g.runs);
  const budgets = sourceBudgets(all);
  const src = sources(all);
  const notes: string[] = [];
  if (src.some((s) => s.converged === false)) {
    notes.push('**Flag: source not converged.** Some rows start from a pretraining run (or are a from-scratch run) whose training loss was still moving (README.md "Fair comparisons" says how converged is decided). Their features are no test of their label level: train longer (train.until_converged) before reading the comparison.');
  }
  if (src.some((s) => s.trainAcc !== undefined && s.trainAcc < o.underfitBelow)) {
    notes.push(`**Flag: source underfit.** Some pretraining runs reached less than ${o.underfitBelow} accuracy on their own training images at their own level: they never learned that level, so a worse transfer says nothing about its granularity (use a stronger recipe, e.g. configs/recipes/small-images.yaml; README.md "Fair comparisons").`);
  }
  if (budgets.length > 1) {
    notes.push(`**Flag: source budgets differ** (${budgets.map((b) => b.toLocaleString('en-US')).join(', ')} images seen in pretraining, or by a from-scratch baseline = epochs x training images): rows are not compared at equal training cost (README.md "Fair comparisons").`);
  }
  return notes;
}
