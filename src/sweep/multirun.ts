import * as YAML from 'yaml';
import { describeKeys } from '../config/keys';
import { parseFreeze } from '../train/finetune';
import { UsageError } from '../util/errors';
import { Command } from './plan';

/**
 * Multirun on the command line, Hydra's `-m`: `granular pretrain -m --set
 * seed=0,1,2 --set train.lr=0.1,0.3` is the one-stage sweep over the cross
 * product of the comma lists (6 runs), the other --set items applying to every
 * run. It is written as a sweep document and planned by the sweep planner
 * (./plan.ts planSweep), so the runs get every check, name, resume rule,
 * --dry-run and --emit of `granular sweep` (./check.ts, ./run.ts). Hydra's
 * rules: a comma outside brackets and quotes separates values (`[a,b]` is one
 * list value, `'a,b'` one string); without -m a comma list is never expanded.
 */

/** What the command line asked for, with -m. */
export interface MultirunRequest {
  command: Command;
  /** --set items in order (key=value, value possibly a comma list). */
  sets: readonly string[];
  /** --level and --freeze, each possibly a comma list (flags beat --set, as for one run). */
  level?: string;
  freeze?: string;
  /** --from: a completed run folder every run fine-tunes from. */
  from?: string;
  /** Runs go to <runs-root>/<name>/. */
  name: string;
}

/**
 * A --set value split at its top-level commas: not inside [], {} or quotes,
 * and not escaped as `\,`. Null when it has none (one value). Each part is
 * YAML text, as --set reads it. Throws UsageError for an empty part.
 */
export function splitCommaList(raw: string, item: string): string[] | null {
  const parts: string[] = [];
  let depth = 0;
  let quote: string | null = null;
  let cur = '';
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i];
    if (quote) {
      cur += ch;
      if (ch === quote) quote = null;
    } else if (ch === '\\' && raw[i + 1] === ',') {
      cur += ',';
      i++;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      cur += ch;
    } else if (ch === '[' || ch === '{') {
      depth++;
      cur += ch;
    } else if (ch === ']' || ch === '}') {
      depth--;
      cur += ch;
    } else if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  if (parts.length === 1) return null;
  const empty = parts.findIndex((p) => p.trim() === '');
  if (empty >= 0) throw new UsageError(`${item}: value ${empty + 1} of the comma list is empty. Give every value (e.g. seed=0,1,2), or quote a value that holds a comma: key='a,b'.`);
  return parts;
}

const parseValue = (text: string, item: string): unknown => {
  try {
    return YAML.parse(text);
  } catch (e) {
    throw new UsageError(`${item}: '${text}' is not a valid YAML value: ${(e as Error).message.split('\n')[0]}. Quote it to pass it as text.`);
  }
};

/**
 * The sweep document (the format of a sweep file; examples/README.md) that a
 * multirun request stands for: one stage named after the command, `grid:` for
 * the keys given as comma lists, `set:` for the others (a key given twice: the
 * later item wins, as for one run), `from_run:` for --from. Values are read as
 * YAML, as --set reads them. Throws UsageError for a malformed item.
 */
export function multirunDoc(req: MultirunRequest): Record<string, unknown> {
  const items: Array<{ key: string; values: unknown[]; list: boolean }> = [];
  const add = (key: string, texts: string[] | null, whole: string, read: (t: string) => unknown) => {
    const at = items.findIndex((x) => x.key === key);
    if (at >= 0) items.splice(at, 1);
    items.push({ key, values: (texts ?? [whole]).map((t) => read(t.trim())), list: texts !== null });
  };
  for (const item of req.sets) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UsageError(`--set '${item}' must look like key=value, e.g. --set seed=0,1,2.`);
    const key = item.slice(0, eq).trim();
    const raw = item.slice(eq + 1);
    add(key, splitCommaList(raw, `--set '${item}'`), raw, (t) => (t === '' ? '' : parseValue(t, `--set '${item}'`)));
  }
  if (req.level !== undefined) add('train.level', splitCommaList(req.level, `--level '${req.level}'`), req.level, (t) => t);
  if (req.freeze !== undefined) add('finetune.freeze', splitCommaList(req.freeze, `--freeze '${req.freeze}'`), req.freeze, (t) => parseFreeze(t));
  const grid = Object.fromEntries(items.filter((x) => x.list).map((x) => [x.key, x.values]));
  const set = Object.fromEntries(items.filter((x) => !x.list).map((x) => [x.key, x.values[0]]));
  const stage: Record<string, unknown> = { command: req.command };
  if (Object.keys(grid).length) stage.grid = grid;
  if (Object.keys(set).length) stage.set = set;
  if (req.from !== undefined) stage.from_run = req.from;
  return { name: req.name, stages: { [req.command]: stage } };
}

/** Whether a key's type (`granular config --keys`) is numbers (and null) only, so that a comma list cannot be one value of it. */
function numericKey(key: string): string | null {
  const info = describeKeys().find((k) => k.key === key);
  if (!info) return null;
  const alternatives = info.type.split('|').map((t) => t.trim());
  return alternatives.every((t) => /^(integer|number)\b/.test(t) || t === 'null') ? info.type : null;
}

/**
 * Without -m a comma list is never expanded (Hydra): refuse one given to a
 * numeric key (`--set seed=0,1,2`), where it can only be a mistake, saying to
 * add -m. Any other value stays as written (a string may hold a comma).
 */
export function refuseCommaListsWithoutMultirun(sets: readonly string[], level: string | undefined): void {
  for (const item of sets) {
    const eq = item.indexOf('=');
    if (eq <= 0) continue;
    const key = item.slice(0, eq).trim();
    const parts = splitCommaList(item.slice(eq + 1), `--set '${item}'`);
    const type = parts && numericKey(key);
    if (type) {
      throw new UsageError(
        `--set '${item}': ${key} is a number (${type}), so '${item.slice(eq + 1)}' is a comma list: one run per value needs -m (--multirun), as in Hydra: ` +
          `granular ... -m --set ${item}. Without -m give one value.`,
      );
    }
  }
  if (level !== undefined && splitCommaList(level, `--level '${level}'`)) {
    throw new UsageError(`--level '${level}' is a comma list: one run per level needs -m (--multirun); several levels in one run are --set 'train.level=[${level}]'.`);
  }
}
