import { z } from 'zod';
import { keyInfo } from './keys';

/**
 * Where each config value came from. A config is merged from layers (schema
 * defaults < a --config file < --set items < flags); the loaders tag each layer
 * they make with its source, so an invalid value is reported with the value
 * and where it was written (`--set train.lr=abc: expected number > 0`), and
 * `granular config` can mark which values nobody set.
 */

type Obj = Record<string, unknown>;
type Path = ReadonlyArray<PropertyKey>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface SetItem {
  key: string;
  text: string;
  value: unknown;
}

interface LayerTag {
  /** `config file 'x.yaml'`, `--set`, `--level`, `the source run's config.yaml`. */
  source: string;
  /** For --set layers: each item's dotted key, its text and the value it gives, in order. */
  items?: SetItem[];
}

const tags = new WeakMap<object, LayerTag>();

/** Record where a layer came from; returns the layer. */
export function tagLayer<T extends object>(layer: T, source: string, items?: SetItem[]): T {
  tags.set(layer, { source, items });
  return layer;
}

/**
 * Whether a layer sets the value at `path`: the path exists in it, or a list
 * above it replaces the whole value (lists replace, mappings merge).
 */
function sets(layer: unknown, path: Path): boolean {
  let cur = layer;
  for (const p of path) {
    if (Array.isArray(cur)) return true;
    if (!isObj(cur) || !(String(p) in cur)) return false;
    cur = cur[String(p)];
  }
  return true;
}

const dotted = (path: Path) => path.filter((p) => typeof p !== 'number').map(String).join('.');

export interface Origin {
  /** Short label: `default`, `--set`, the config file's path, `--level`. */
  label: string;
  /** Long form for messages: `--set train.lr=abc`, `config file 'x.yaml'`; null for defaults and untagged layers. */
  where: string | null;
  /** The --set item's key covers exactly this path (the message need not repeat key and value). */
  exact: boolean;
}

/** The layer that gave the value at `path` (the last one setting it), or the schema default. */
export function originOf(layers: readonly object[], path: Path): Origin {
  for (let i = layers.length - 1; i >= 0; i--) {
    if (!sets(layers[i], path)) continue;
    const tag = tags.get(layers[i]);
    if (!tag) return { label: 'set', where: null, exact: false };
    const key = dotted(path);
    // The last item whose own value reaches the path (`train={lr: 1}` does not set train.epochs).
    const item = tag.items?.slice().reverse().find((it) => key === it.key || (key.startsWith(it.key + '.') && sets(it.value, path.slice(it.key.split('.').length))));
    if (item) return { label: tag.source, where: `${tag.source} ${quoteArg(item.text)}`, exact: item.key === key };
    return { label: tag.source.replace(/^config file '(.*)'$/, '$1'), where: tag.source, exact: false };
  }
  return { label: 'default', where: null, exact: false };
}

/** An argument as a shell would need it (quoted only where needed, so messages stay readable). */
function quoteArg(s: string): string {
  return /^[\w.:=@,+/%-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function valueAt(o: unknown, path: Path): unknown {
  let cur = o;
  for (const p of path) {
    if (Array.isArray(cur)) cur = cur[Number(p)];
    else if (isObj(cur)) cur = cur[String(p)];
    else return undefined;
  }
  return cur;
}

function show(v: unknown): string {
  return typeof v === 'string' ? `'${v}'` : JSON.stringify(v);
}

/** What the schema wanted, in the words of `granular config --keys`. */
function expected(issue: z.core.$ZodIssue, path: Path): string {
  if (issue.code === 'invalid_format' && !/^Invalid/.test(issue.message)) return issue.message; // the schema's own wording (name:)
  if (issue.code === 'custom') return issue.message; // a cross-key rule of the schema (superRefine), worded there
  if (issue.code === 'unrecognized_keys') return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
  const item = typeof path[path.length - 1] === 'number';
  if (issue.code === 'invalid_value') return `expected one of ${issue.values.map(String).join(', ')}`;
  const info = keyInfo(path.filter((p): p is string | number => typeof p !== 'symbol'));
  if (info && !item && !info.section) return `expected ${info.type}${info.type.includes('mapping') ? ` (${info.description})` : ''}`;
  return issue.message.replace(/^Invalid input: /, '').replace(/^Too (small|big): /, '');
}

/**
 * One line per invalid value: where it was written, the key and value, and what
 * was expected, e.g. `--set train.lr=abc: expected number > 0`.
 */
export function describeIssue(issue: z.core.$ZodIssue, merged: Obj, layers: readonly object[]): string {
  const path = issue.path;
  const key = path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[') || '(top level)';
  const value = valueAt(merged, path);
  const missing = value === undefined && issue.code === 'invalid_type';
  if (missing) {
    // Nobody wrote the missing key: name where its mapping was written.
    const parent = originOf(layers, path.slice(0, -1));
    const what = `${key} is required (${expected(issue, path).replace(/^expected /, '')})`;
    return parent.where ? `${parent.where}: ${what}` : what;
  }
  const want = expected(issue, path);
  const origin = originOf(layers, path);
  if (origin.where && origin.exact) return `${origin.where}: ${want}`;
  const kv = `${key} = ${show(value)}`;
  return origin.where ? `${origin.where}: ${kv}: ${want}` : `${kv}: ${want}`;
}
