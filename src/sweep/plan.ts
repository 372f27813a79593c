import * as YAML from 'yaml';
import { configKeys } from '../config/load';
import { FINETUNE_DEFAULT_LEVEL } from '../config/stage-level';
import { nearest, UsageError } from '../util/errors';
import { sanitizeName } from '../util/fsx';

/**
 * Sweep expansion, kept pure (no files, no tensors): a parsed sweep file in, the
 * list of runs out, each with the exact `granular` arguments that make it.
 * See "Sweep file" in DESIGN.md.
 */

export type Command = 'pretrain' | 'finetune';
type Obj = Record<string, unknown>;
/** An ordered list of config settings (dotted key, value); later entries win. */
export type Settings = Array<[string, unknown]>;

export interface PlannedRun {
  /** Folder name under runs/<sweep>/, unique in the sweep. */
  name: string;
  /** The stage (its key under `stages:`) and the command it runs. */
  stage: string;
  command: Command;
  /** Name of the run of this sweep this one fine-tunes from (`--from`), if any. */
  from: string | null;
  /**
   * A completed run folder outside the sweep that this run fine-tunes from
   * (a stage's `from_run:`, or multirun's --from), as the command is given it
   * (relative to the working folder, or absolute); null for none.
   */
  source: string | null;
  /** A from-scratch baseline added by `scratch: true`. */
  scratch: boolean;
  /** The grid point or explicit run entry of this stage. */
  params: Settings;
  /** What names the run: its source's identity, then its own params. */
  identity: Settings;
  /** Everything passed as --set, in order: stage `set`, then params. */
  sets: string[];
  /**
   * Settings that make this run's config from the base config: for a chained run
   * the source's settings come first (its config.yaml carries them), then its own.
   */
  settings: Settings;
  /** Whether the command takes `--config <base>` (runs with `--from` start from their source's config). */
  usesBase: boolean;
}

export interface StagePlan {
  name: string;
  command: Command;
  from: string | null;
  runs: string[];
}

export interface SweepPlan {
  name: string;
  /** `base:` as written (relative to the sweep file), or null. */
  base: string | null;
  /** Stages in dependency order. */
  stages: StagePlan[];
  /** Every run, in dependency order (a run comes after the run it starts from). */
  runs: PlannedRun[];
}

const TOP_KEYS = ['name', 'base', 'stages', 'description'];
const STAGE_KEYS = ['command', 'from', 'from_run', 'grid', 'set', 'runs', 'scratch'];
const COMMANDS: Command[] = ['pretrain', 'finetune'];

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Config keys a sweep may set: every schema path, the accepted alias, and free-form keys below finetune.unfreeze. */
function keyChecker(where: string): { check: (key: string, entry: string) => string; isSection: (key: string) => boolean } {
  const keys = configKeys();
  const sections = new Set(keys.filter((k) => keys.some((o) => o.startsWith(k + '.'))));
  const check = (key: string, entry: string): string => {
    if (keys.includes(key) || key === 'data.source' || key.startsWith('finetune.unfreeze.')) return key;
    const hint = nearest(key, keys);
    throw new UsageError(`${where}: ${entry}: unknown config key '${key}'.${hint ? ` Did you mean '${hint}'?` : ''} Sweep keys are config keys (see README.md).`);
  };
  return { check, isSection: (k) => sections.has(k) };
}

/** `{train: {level: leaf}}` and `{train.level: leaf}` both become [['train.level', 'leaf']]. */
function flatten(o: Obj, entry: string, kc: ReturnType<typeof keyChecker>, prefix = ''): Settings {
  const out: Settings = [];
  for (const [k, v] of Object.entries(o)) {
    const key = kc.check(prefix ? `${prefix}.${k}` : k, entry);
    if (isObj(v) && kc.isSection(key)) out.push(...flatten(v, entry, kc, key));
    else out.push([key, v]);
  }
  return out;
}

/** A value as `--set` reads it back (YAML): plain where that round-trips, JSON (valid YAML flow) otherwise. */
export function formatValue(v: unknown): string {
  if (typeof v === 'string') {
    let back: unknown;
    try {
      back = YAML.parse(v);
    } catch {
      back = undefined;
    }
    return back === v && !/[\s#'"]/.test(v) ? v : JSON.stringify(v);
  }
  return v === undefined ? 'null' : JSON.stringify(v);
}

/** A value as it appears in a folder name: `depth:2` → `depth2`, `[a, b]` → `a+b`. */
function nameValue(v: unknown): string {
  if (Array.isArray(v)) return v.map(nameValue).join('+');
  if (isObj(v)) return Object.entries(v).map(([k, x]) => `${k}${nameValue(x)}`).join('+');
  return String(v);
}

function shortKeys(keys: readonly string[]): Map<string, string> {
  const last = (k: string) => k.split('.').pop()!;
  const count = new Map<string, Set<string>>();
  for (const k of keys) count.set(last(k), (count.get(last(k)) ?? new Set()).add(k));
  return new Map(keys.map((k) => [k, count.get(last(k))!.size > 1 ? k : last(k)]));
}

function paramString(params: Settings, short: Map<string, string>): string {
  return params.map(([k, v]) => `${short.get(k) ?? k}=${nameValue(v)}`).join(',');
}

function cartesian(grid: Settings): Settings[] {
  // The first key varies slowest, as a nested loop written in file order would.
  let points: Settings[] = [[]];
  for (const [key, values] of grid) {
    const next: Settings[] = [];
    for (const p of points) for (const v of values as unknown[]) next.push([...p, [key, v]]);
    points = next;
  }
  return points;
}

interface StageSpec {
  name: string;
  command: Command;
  from: string | null;
  fromRun: string | null;
  set: Settings;
  points: Settings[];
  scratch: boolean;
}

function parseStage(name: string, raw: unknown, where: string, kc: ReturnType<typeof keyChecker>): StageSpec {
  const at = `stages.${name}`;
  if (!isObj(raw)) throw new UsageError(`${where}: ${at} must be a mapping with grid:, set:, runs:, from: or scratch:.`);
  for (const k of Object.keys(raw)) {
    if (!STAGE_KEYS.includes(k)) {
      const hint = nearest(k, STAGE_KEYS);
      throw new UsageError(`${where}: ${at}.${k} is not a stage setting.${hint ? ` Did you mean '${hint}'?` : ''} A stage takes ${STAGE_KEYS.join(', ')}.`);
    }
  }
  const command = (raw.command ?? name) as Command;
  if (!COMMANDS.includes(command)) {
    throw new UsageError(
      raw.command === undefined
        ? `${where}: stage '${name}' is not a command; name the stage pretrain or finetune, or add 'command: pretrain|finetune'.`
        : `${where}: ${at}.command '${String(raw.command)}' must be pretrain or finetune.`,
    );
  }
  const from = raw.from === undefined || raw.from === null ? null : String(raw.from);
  if (from !== null && command === 'pretrain') throw new UsageError(`${where}: ${at}.from: a pretrain stage cannot start from another run; use a finetune stage.`);
  if (raw.from_run !== undefined && raw.from_run !== null && (typeof raw.from_run !== 'string' || !raw.from_run.trim())) throw new UsageError(`${where}: ${at}.from_run must be the path of a completed run folder.`);
  const fromRun = typeof raw.from_run === 'string' ? raw.from_run.trim() : null;
  if (fromRun !== null && command === 'pretrain') throw new UsageError(`${where}: ${at}.from_run: a pretrain stage cannot start from another run; use a finetune stage.`);
  if (fromRun !== null && from !== null) throw new UsageError(`${where}: ${at} has both from: (a stage of this sweep) and from_run: (a run folder); keep one.`);

  let set: Settings = [];
  if (raw.set !== undefined && raw.set !== null) {
    if (!isObj(raw.set)) throw new UsageError(`${where}: ${at}.set must be a mapping of config keys to values, e.g. { train.epochs: 30 }.`);
    set = flatten(raw.set, `${at}.set`, kc);
  }

  const points: Settings[] = [];
  if (raw.grid !== undefined && raw.grid !== null) {
    if (!isObj(raw.grid)) throw new UsageError(`${where}: ${at}.grid must be a mapping of config keys to lists of values, e.g. { seed: [0, 1, 2] }.`);
    const grid = flatten(raw.grid, `${at}.grid`, kc);
    if (grid.length === 0) throw new UsageError(`${where}: ${at}.grid is empty; list at least one key with values, or remove grid:.`);
    for (const [key, values] of grid) {
      if (!Array.isArray(values)) throw new UsageError(`${where}: ${at}.grid.${key} must be a list of values (write [${formatValue(values)}], or move it to set:).`);
      if (values.length === 0) throw new UsageError(`${where}: ${at}.grid.${key} is an empty list, so the grid has no runs; give it at least one value.`);
      if (set.some(([k]) => k === key)) throw new UsageError(`${where}: ${at}: '${key}' is in both grid: and set:; keep it in one.`);
    }
    points.push(...cartesian(grid));
  }
  if (raw.runs !== undefined && raw.runs !== null) {
    if (!Array.isArray(raw.runs) || raw.runs.length === 0) throw new UsageError(`${where}: ${at}.runs must be a non-empty list of mappings, e.g. [{ train.level: leaf, seed: 0 }].`);
    raw.runs.forEach((r, i) => {
      if (!isObj(r) || Object.keys(r).length === 0) throw new UsageError(`${where}: ${at}.runs[${i}] must be a non-empty mapping of config keys to values.`);
      points.push(flatten(r, `${at}.runs[${i}]`, kc));
    });
  }
  if (points.length === 0) points.push([]); // only set: → one run

  if (raw.scratch !== undefined && typeof raw.scratch !== 'boolean') throw new UsageError(`${where}: ${at}.scratch must be true or false.`);
  const scratch = raw.scratch === true;
  if (from !== null || fromRun !== null) {
    const model = [...set, ...points.flat()].find(([k]) => k === 'model' || k.startsWith('model.'));
    if (model) throw new UsageError(`${where}: ${at}: '${model[0]}' is locked by the pretrained runs this stage starts from; grid it in the stage they come from.`);
  }
  if (scratch && command !== 'finetune') throw new UsageError(`${where}: ${at}.scratch: from-scratch baselines belong to a finetune stage.`);
  if (scratch && fromRun !== null) throw new UsageError(`${where}: ${at}.scratch: from-scratch baselines are made for from: stages; for a from_run: stage add a stage without from_run: that sets the same keys.`);
  if (scratch && from === null) throw new UsageError(`${where}: ${at}.scratch: this stage has no from:, so its runs already train from scratch; remove scratch: true.`);
  return { name, command, from, fromRun, set, points, scratch };
}

/** Stages in dependency order (file order where free); unknown or circular `from` is an error. */
function orderStages(specs: StageSpec[], where: string): StageSpec[] {
  const byName = new Map(specs.map((s) => [s.name, s]));
  for (const s of specs) {
    if (s.from === null) continue;
    if (s.from === s.name) throw new UsageError(`${where}: stages.${s.name}.from names its own stage.`);
    if (!byName.has(s.from)) {
      const hint = nearest(s.from, [...byName.keys()]);
      throw new UsageError(`${where}: stages.${s.name}.from: there is no stage '${s.from}'.${hint ? ` Did you mean '${hint}'?` : ''} Stages: ${[...byName.keys()].join(', ')}.`);
    }
  }
  const out: StageSpec[] = [];
  const done = new Set<string>();
  while (out.length < specs.length) {
    const next = specs.find((s) => !done.has(s.name) && (s.from === null || done.has(s.from)));
    if (!next) throw new UsageError(`${where}: the from: links of stages ${specs.filter((s) => !done.has(s.name)).map((s) => s.name).join(', ')} form a cycle.`);
    out.push(next);
    done.add(next.name);
  }
  return out;
}

const toSets = (s: Settings) => s.map(([k, v]) => `${k}=${formatValue(v)}`);
/** Later settings win: one entry per key, in the order keys first appear, with its last value. */
export function collapse(s: Settings): Settings {
  const last = new Map<string, unknown>();
  for (const [k, v] of s) last.set(k, v);
  return [...last.entries()];
}
const sameSettings = (a: Settings, b: Settings) => {
  const key = (s: Settings) => JSON.stringify(collapse(s).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
  return key(a) === key(b);
};

/**
 * Expand a parsed sweep file. `where` names the file in error messages;
 * `mapValue` rewrites a value as it is passed to a run (a path relative to the
 * sweep file made readable from the working folder), never the run's name;
 * `mapPath` does the same for a stage's `from_run:` folder.
 */
export function planSweep(
  doc: unknown,
  where = 'sweep file',
  mapValue: (key: string, value: unknown) => unknown = (_k, v) => v,
  mapPath: (p: string) => string = (p) => p,
): SweepPlan {
  // The values a run is given (--set, and the config check.ts resolves): paths made readable from
  // the working folder (see loadSweep). Names and identities keep the values as written.
  const given = (s: Settings): Settings => s.map(([k, v]) => [k, mapValue(k, v)]);
  if (!isObj(doc)) throw new UsageError(`${where} must be a YAML mapping with name:, base: and stages:.`);
  for (const k of Object.keys(doc)) {
    if (!TOP_KEYS.includes(k)) {
      const hint = nearest(k, TOP_KEYS);
      throw new UsageError(`${where}: '${k}' is not a sweep setting.${hint ? ` Did you mean '${hint}'?` : ''} A sweep file has ${TOP_KEYS.join(', ')}.`);
    }
  }
  if (typeof doc.name !== 'string' || !doc.name.trim()) throw new UsageError(`${where}: name: is required (runs go to runs/<name>/).`);
  const name = sanitizeName(doc.name.trim());
  if (doc.base !== undefined && doc.base !== null && typeof doc.base !== 'string') throw new UsageError(`${where}: base: must be the path of a config file, relative to the sweep file.`);
  if (!isObj(doc.stages) || Object.keys(doc.stages).length === 0) throw new UsageError(`${where}: stages: is required, e.g. stages: { pretrain: { grid: { seed: [0, 1] } } }.`);

  const kc = keyChecker(where);
  const specs = orderStages(Object.entries(doc.stages).map(([n, raw]) => parseStage(n, raw, where, kc)), where);
  const runs: PlannedRun[] = [];
  const byName = new Map<string, PlannedRun>();
  const stages: StagePlan[] = [];
  const add = (r: PlannedRun, entry: string) => {
    const clash = byName.get(r.name);
    if (clash) {
      // A from-scratch baseline shared by several source runs is one run.
      if (r.scratch && clash.scratch && sameSettings(clash.settings, r.settings)) return;
      throw new UsageError(`${where}: ${entry} and another run of stage '${clash.stage}' would both be '${r.name}'; make the grid/runs entries differ.`);
    }
    byName.set(r.name, r);
    runs.push(r);
    stages[stages.length - 1].runs.push(r.name);
  };

  for (const s of specs) {
    stages.push({ name: s.name, command: s.command, from: s.from, runs: [] });
    if (s.from === null) {
      const short = shortKeys([...new Set(s.points.flat().map(([k]) => k))]);
      s.points.forEach((p, i) => {
        const params = paramString(p, short);
        add(
          { name: sanitizeName(params ? `${s.name}-${params}` : s.name), stage: s.name, command: s.command, from: null, source: s.fromRun === null ? null : mapPath(s.fromRun), scratch: false, params: p, identity: p, sets: toSets(given([...s.set, ...p])), settings: given([...s.set, ...p]), usesBase: true },
          `stages.${s.name} point ${i + 1}`,
        );
      });
      continue;
    }
    const sources = runs.filter((r) => r.stage === s.from);
    const short = shortKeys([...new Set([...sources.flatMap((r) => r.identity), ...s.points.flat()].map(([k]) => k))]);
    for (const src of sources) {
      s.points.forEach((p, i) => {
        const parts = [s.name, paramString(src.identity, short), paramString(p, short)].filter(Boolean);
        add(
          { name: sanitizeName(parts.join('-')), stage: s.name, command: s.command, from: src.name, source: null, scratch: false, params: p, identity: [...src.identity, ...p], sets: toSets(given([...s.set, ...p])), settings: [...src.settings, ...given([...s.set, ...p])], usesBase: false },
          `stages.${s.name} point ${i + 1} from '${src.name}'`,
        );
      });
    }
    if (s.scratch) {
      // The baseline gets exactly the config its fine-tuned twin gets, minus the
      // pretrained weights: the source's settings, then this stage's own.
      for (const src of sources) {
        s.points.forEach((p, i) => {
          // Its twin trains at `top` unless the stage names a level (it never inherits the source's);
          // the baseline says so explicitly, since its base config may name another level.
          const level: Settings = [...s.set, ...p].some(([k]) => k === 'train.level') ? [] : [['train.level', FINETUNE_DEFAULT_LEVEL]];
          const own = new Set([...s.set, ...p, ...level].map(([k]) => k));
          const kept = src.identity.filter(([k]) => !own.has(k));
          const settings = [...src.settings, ...given([...s.set, ...p, ...level])];
          const parts = [`${s.name}-scratch`, paramString(kept, short), paramString(p, short)].filter(Boolean);
          add(
            { name: sanitizeName(parts.join('-')), stage: s.name, command: s.command, from: null, source: null, scratch: true, params: p, identity: [...kept, ...p], sets: toSets(collapse(settings)), settings, usesBase: true },
            `stages.${s.name} scratch baseline for point ${i + 1}`,
          );
        });
      }
    }
  }
  return { name, base: (doc.base as string | undefined) ?? null, stages, runs };
}

/** The `granular` arguments (after the program name) that start a planned run. */
export function runArgs(run: PlannedRun, opts: { base: string | null; runsDir: string }): string[] {
  const dir = (n: string) => joinPosix(opts.runsDir, n);
  return [
    run.command,
    ...(run.usesBase && opts.base ? ['--config', opts.base] : []),
    ...(run.from ? ['--from', dir(run.from)] : run.source ? ['--from', run.source] : []),
    ...run.sets.flatMap((s) => ['--set', s]),
    '--run-dir',
    dir(run.name),
  ];
}

/** The arguments that continue an existing run folder. */
export function resumeArgs(run: PlannedRun, runsDir: string): string[] {
  return [run.command, '--resume', joinPosix(runsDir, run.name)];
}

function joinPosix(a: string, b: string): string {
  return a === '' || a === '.' ? b : `${a.replace(/\/+$/, '')}/${b}`;
}

/**
 * What identifies a run's request, independent of where the command was typed:
 * the command, its --set items and the name of the folder it starts from.
 */
export function fingerprint(args: readonly string[]): string {
  const i = args.findIndex((a) => COMMANDS.includes(a as Command));
  const sets: string[] = [];
  let from = '';
  for (let j = i + 1; j < args.length; j++) {
    if (args[j] === '--set') sets.push(args[++j]);
    else if (args[j].startsWith('--set=')) sets.push(args[j].slice(6));
    else if (args[j] === '--from') from = (args[++j] ?? '').replace(/\/+$/, '').split('/').pop()!;
  }
  return JSON.stringify({ command: args[i] ?? '', from, sets });
}
