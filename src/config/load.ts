import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { z } from 'zod';
import { UsageError, nearest } from '../util/errors';
import { describeIssue, SetItem, tagLayer } from './provenance';
import { Config, configSchema, defaultConfig } from './schema';

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Keys whose value is free-form (validated by the feature that reads it). */
const OPEN_KEYS = new Set(['finetune.unfreeze', 'train.until_converged']);

/** Old or alternative spellings that keep working. */
const ALIASES = new Map<string, string>([['data.source', 'data.format']]);

/**
 * Keys that hold a path. A run's config.yaml stores each absolute, so `eval`,
 * `finetune --from` and `--resume` read the same files from any folder: a
 * path in a --config file is relative to that file's folder, a path in --set
 * (or a default) to the working folder. (`data.annotations.*` are relative to
 * data.root by definition, and `train.level: nodes:FILE` holds one too.)
 */
export const PATH_KEYS = ['data.root', 'data.taxonomy', 'data.is_a', 'data.words', 'data.cache_dir', 'eval.ood_root'] as const;

function getPath(o: Obj, key: string): unknown {
  let cur: unknown = o;
  for (const p of key.split('.')) cur = isObj(cur) ? cur[p] : undefined;
  return cur;
}

/** The path keys of a (partial) config that hold a relative path, with their values. */
export function relativePaths(o: Obj): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const key of PATH_KEYS) {
    const v = getPath(o, key);
    if (typeof v === 'string' && v !== '' && !path.isAbsolute(v)) out.push([key, v]);
  }
  const level = getPath(o, 'train.level');
  const m = typeof level === 'string' ? level.match(/^\s*nodes:(.+)$/) : null;
  if (m && !path.isAbsolute(m[1].trim())) out.push(['train.level', level as string]);
  return out;
}

/** A copy of a (partial) config with every relative path resolved against `base`. */
export function absolutePaths<T extends Obj>(o: T, base: string): T {
  const rel = relativePaths(o);
  if (!rel.length) return o;
  const out = structuredClone(o) as Obj;
  for (const [key, v] of rel) {
    const abs = key === 'train.level' ? `nodes:${path.resolve(base, v.trim().slice('nodes:'.length).trim())}` : path.resolve(base, v);
    setPath(out, key, abs, false);
  }
  return out as T;
}

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
      ` 'granular config --keys' lists every key with its type, default and meaning.`,
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
  if (doc.errors.length) throw new UsageError(`config file '${file}' ${yamlErrorText(doc.errors[0])}`);
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (e) {
    // e.g. an alias (*name) whose anchor is not defined
    throw new UsageError(`config file '${file}' is not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (value == null) return {};
  if (!isObj(value)) throw new UsageError(`config file '${file}' must be a YAML mapping of sections (data, model, train, ...), not ${Array.isArray(value) ? 'a list' : typeof value}.`);
  // Paths in a config file are relative to its folder, wherever granular is started from.
  return tagLayer(absolutePaths(normalizePartial(value, `in '${file}'`), path.dirname(path.resolve(file))), `config file '${file}'`);
}

/** The files of one or more `--config` options, in the order given. */
export function configFileList(files: string | readonly string[] | undefined): string[] {
  if (files === undefined) return [];
  return typeof files === 'string' ? [files] : [...files];
}

/**
 * Several `--config` files compose in the order given, Hydra-style: each is a
 * layer, a later file overrides an earlier one key by key (mappings merge,
 * lists and scalars replace), and each keeps its own tag, so `granular config`
 * names the file every value came from. Each file's relative paths are read
 * against its own folder. Errors: UsageError from readConfigFile.
 */
export function readConfigFiles(files: string | readonly string[] | undefined): Obj[] {
  return configFileList(files).map((f) => readConfigFile(f));
}

/**
 * A YAML syntax error as one message: where, what, and the offending lines
 * with the caret the yaml library draws under the spot.
 */
export function yamlErrorText(e: YAML.YAMLError): string {
  const pos = e.linePos?.[0];
  const [first, ...rest] = e.message.split('\n');
  const what = first.replace(/ at line \d+, column \d+:?$/, '');
  const snippet = rest.filter((l, i) => l.trim() !== '' || (i > 0 && i < rest.length - 1)).map((l) => `    ${l}`.trimEnd());
  return `${pos ? `line ${pos.line}, column ${pos.col} ` : ''}is not valid YAML: ${what}${snippet.length ? `\n${snippet.join('\n')}` : ''}`;
}

/** YAML tokens whose text never reaches the parsed value. */
const LOST_TOKENS: Record<string, string> = {
  comment: 'a comment',
  anchor: 'an anchor',
  'doc-start': "a document marker ('---')",
  'doc-end': "a document end marker ('...')",
  'directive-line': "a directive ('%')",
};

/** The `--set` item written so that YAML reads its value as the text given (a JSON string is YAML). */
function quotedSet(key: string, raw: string): string {
  const item = `${key}=${JSON.stringify(raw)}`;
  return `'${item.replace(/'/g, `'\\''`)}'`;
}

/**
 * Parse `--set a.b=c` items; values are YAML (`[1, 2]`, `true`, `null`, `0.1`).
 * A value whose YAML parse would drop part of its text (` #2` read as a
 * comment, `&a` as an anchor, `---` as a document marker) is refused: the user
 * typed text that would silently not be used. Errors: UsageError (exit 2)
 * naming the item and the quoted form that works.
 */
export function parseSets(items: readonly string[], cwd = process.cwd()): Obj {
  const out: Obj = {};
  const origins: SetItem[] = [];
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UsageError(`--set '${item}' must look like key=value, e.g. --set train.epochs=10.`);
    const key = checkKey(item.slice(0, eq).trim(), `in --set '${item}'`);
    const raw = item.slice(eq + 1);
    let value: unknown;
    if (raw.trim() === '') value = '';
    else {
      for (const tok of new YAML.Lexer().lex(raw)) {
        const what = LOST_TOKENS[YAML.CST.tokenType(tok) ?? ''];
        if (what) {
          throw new UsageError(
            `--set '${item}': YAML reads '${tok}' in the value as ${what}, so that text would be dropped and another value used. ` +
              (/^\s*[[{]/.test(raw)
              ? `Quote the entry that holds it, e.g. --set '${key}=["a #b"]', or leave it out.`
              : `Quote it to pass the text as it is: --set ${quotedSet(key, raw)}.`),
          );
        }
      }
      try {
        value = YAML.parse(raw);
      } catch (e) {
        throw new UsageError(
          `--set '${item}': the value is not valid YAML: ${(e as Error).message.split('\n')[0].replace(/ at line 1, column (\d+):?$/, ' (at character $1 of the value)').replace(/ at line \d+, column \d+:?$/, '')}. ` +
            `Quote it to pass it as text: --set ${quotedSet(key, raw)}.`,
        );
      }
    }
    if (isObj(value) && !OPEN_KEYS.has(key)) value = normalizePartial(value, `in --set '${item}'`, key);
    setPath(out, key, value, true);
    origins.push({ key, text: `${item.slice(0, eq).trim()}=${raw}`, value });
  }
  // Paths in --set are relative to the working folder.
  return tagLayer(absolutePaths(out, cwd), '--set', origins);
}

/** Merge layers in increasing precedence and validate the result once. */
export function resolveConfig(layers: readonly Obj[], what = 'the config'): Config {
  let merged: Obj = {};
  for (const l of layers) merged = deepMerge(merged, l);
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) throw new UsageError(formatZodError(parsed.error, what, merged, layers));
  // What is still relative came from a default or a flag: the working folder's.
  const p = absolutePaths(parsed.data as unknown as Obj, process.cwd()) as unknown as typeof parsed.data;
  // `seed` is the default of both finer seeds.
  return { ...p, data: { ...p.data, seed: p.data.seed ?? p.seed }, train: { ...p.train, seed: p.train.seed ?? p.seed } };
}

function formatZodError(err: z.ZodError, what: string, merged: Obj, layers: readonly Obj[]): string {
  const lines = err.issues.slice(0, 5).map((i) => `  ${describeIssue(i, merged, layers)}`);
  return `invalid value in ${what}:\n${lines.join('\n')}\nFix that value; 'granular config --keys' lists every key with its type and default.`;
}

/** The config as YAML, with a header saying how it was made. */
export function configToYaml(cfg: Config, header?: string): string {
  return (header ? header.split('\n').map((l) => `# ${l}`).join('\n') + '\n' : '') + YAML.stringify(cfg);
}

export function parseConfigYaml(text: string, file: string): Config {
  const doc = YAML.parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) throw new UsageError(`'${file}' ${yamlErrorText(doc.errors[0])}\nThe run folder is damaged: restore config.yaml or start a new run.`);
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (e) {
    throw new UsageError(`'${file}' is not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!isObj(value)) throw new UsageError(`'${file}' is empty or not a mapping of config sections; the run folder is damaged.`);
  const rel = relativePaths(value);
  if (rel.length) {
    // Written before paths were stored absolute: the folder it was started from is not recorded.
    process.stderr.write(
      `granular: warning: '${file}' stores ${rel.map(([k, v]) => `${k} '${v}'`).join(', ')} relative (an older granular wrote it); ` +
        `read against the working folder '${process.cwd()}'. Run from the folder the run was started in, or write absolute paths into it.\n`,
    );
  }
  return resolveConfig([normalizePartial(value, `in '${file}'`)], `'${file}'`);
}
