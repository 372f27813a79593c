import * as fs from 'node:fs';
import * as YAML from 'yaml';
import { z } from 'zod';
import { UsageError, nearest } from '../util/errors';
import { Config, configSchema, defaultConfig } from './schema';

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Keys whose value is free-form (validated by the feature that reads it). */
const OPEN_KEYS = new Set(['finetune.unfreeze', 'train.until_converged']);

/** Old or alternative spellings that keep working. */
const ALIASES = new Map<string, string>([['data.source', 'data.format']]);

/** Every settable dotted path: leaves and the sections above them. */
export function configKeys(): string[] {
  const out: string[] = [];
  const walk = (o: Obj, prefix: string) => {
    for (const [k, v] of Object.entries(o)) {
      const p = prefix ? `${prefix}.${k}` : k;
      out.push(p);
      if (isObj(v)) walk(v, p);
    }
  };
  walk(defaultConfig() as unknown as Obj, '');
  return out;
}

function checkKey(path: string, where: string): string {
  const canonical = ALIASES.get(path) ?? path;
  const keys = configKeys();
  if (keys.includes(canonical)) return canonical;
  if ([...OPEN_KEYS].some((k) => canonical.startsWith(k + '.'))) return canonical;
  const hint = nearest(path, keys);
  throw new UsageError(
    `unknown config key '${path}' ${where}.` +
      (hint ? ` Did you mean '${hint}'?` : '') +
      ` Run 'granular pretrain --help' or see README.md for the valid keys.`,
  );
}

/** Rewrite a partial config (from a file) so every key is checked and aliases resolved. */
function normalizePartial(o: Obj, where: string, prefix = ''): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(o)) {
    const path = checkKey(prefix ? `${prefix}.${k}` : k, where);
    if (isObj(v) && !OPEN_KEYS.has(path)) {
      setPath(out, path.slice(prefix ? prefix.length + 1 : 0), normalizePartial(v, where, path), true);
    } else {
      setPath(out, path.slice(prefix ? prefix.length + 1 : 0), v, false);
    }
  }
  return out;
}

function setPath(o: Obj, path: string, value: unknown, merge: boolean): void {
  const parts = path.split('.');
  let cur = o;
  for (const p of parts.slice(0, -1)) {
    if (!isObj(cur[p])) cur[p] = {};
    cur = cur[p] as Obj;
  }
  const last = parts[parts.length - 1];
  cur[last] = merge && isObj(cur[last]) && isObj(value) ? deepMerge(cur[last] as Obj, value) : value;
}

/** Objects merge key by key; arrays and scalars replace. */
export function deepMerge(base: Obj, over: Obj): Obj {
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) {
    out[k] = isObj(v) && isObj(out[k]) ? deepMerge(out[k] as Obj, v) : v;
  }
  return out;
}

/** Read a YAML config file as a partial config with checked keys. */
export function readConfigFile(file: string): Obj {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read config file '${file}': ${(e as NodeJS.ErrnoException).code ?? e}. Check the path given to --config.`);
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true, merge: true });
  if (doc.errors.length) {
    const e = doc.errors[0];
    const pos = e.linePos?.[0];
    throw new UsageError(
      `config file '${file}'${pos ? ` line ${pos.line}, column ${pos.col}` : ''} is not valid YAML: ${e.message.split('\n')[0]}`,
    );
  }
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (e) {
    // e.g. an alias (*name) whose anchor is not defined
    throw new UsageError(`config file '${file}' is not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (value == null) return {};
  if (!isObj(value)) throw new UsageError(`config file '${file}' must be a YAML mapping of sections (data, model, train, ...), not ${Array.isArray(value) ? 'a list' : typeof value}.`);
  return normalizePartial(value, `in '${file}'`);
}

/** Parse `--set a.b=c` items; values are YAML (`[1, 2]`, `true`, `null`, `0.1`). */
export function parseSets(items: readonly string[]): Obj {
  const out: Obj = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UsageError(`--set '${item}' must look like key=value, e.g. --set train.epochs=10.`);
    const key = checkKey(item.slice(0, eq).trim(), `in --set '${item}'`);
    const raw = item.slice(eq + 1);
    let value: unknown;
    try {
      value = raw.trim() === '' ? '' : YAML.parse(raw);
    } catch (e) {
      throw new UsageError(`--set '${item}': the value is not valid YAML (${(e as Error).message.split('\n')[0]}). Quote strings that contain ':' or '#'.`);
    }
    if (isObj(value) && !OPEN_KEYS.has(key)) value = normalizePartial(value, `in --set '${item}'`, key);
    setPath(out, key, value, true);
  }
  return out;
}

/** Merge layers in increasing precedence and validate the result once. */
export function resolveConfig(layers: readonly Obj[], what = 'the config'): Config {
  let merged: Obj = {};
  for (const l of layers) merged = deepMerge(merged, l);
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) throw new UsageError(formatZodError(parsed.error, what));
  const p = parsed.data;
  // `seed` is the default of both finer seeds.
  return { ...p, data: { ...p.data, seed: p.data.seed ?? p.seed }, train: { ...p.train, seed: p.train.seed ?? p.seed } };
}

function formatZodError(err: z.ZodError, what: string): string {
  const lines = err.issues.slice(0, 5).map((i) => {
    const key = i.path.join('.') || '(top level)';
    return `  ${key}: ${i.message}`;
  });
  return `invalid value in ${what}:\n${lines.join('\n')}\nFix the config file or the --set value for that key.`;
}

/** The config as YAML, with a header saying how it was made. */
export function configToYaml(cfg: Config, header?: string): string {
  return (header ? header.split('\n').map((l) => `# ${l}`).join('\n') + '\n' : '') + YAML.stringify(cfg);
}

export function parseConfigYaml(text: string, file: string): Config {
  let value: unknown;
  try {
    value = YAML.parse(text);
  } catch (e) {
    throw new UsageError(`'${file}' is not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!isObj(value)) throw new UsageError(`'${file}' is empty or not a mapping of config sections; the run folder is damaged.`);
  return resolveConfig([normalizePartial(value, `in '${file}'`)], `'${file}'`);
}
