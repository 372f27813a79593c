import { z } from 'zod';
import { configSchema } from './schema';

/**
 * The config keys as a user looks them up (`granular config --keys`): every
 * dotted key with its type, default and one-line description, generated from
 * the zod schema (its `.describe()` texts) through zod's JSON Schema export,
 * so the listing cannot drift from what the schema accepts.
 */

export interface KeyInfo {
  /** Dotted path, e.g. `train.epochs`; keys inside a free-form value (`finetune.unfreeze.every`) too. */
  key: string;
  /** Readable type: `integer >= 0`, `sgd | adam`, `list of string`, `number in [0, 1] | null`. */
  type: string;
  /** The schema default; undefined where the key has none (a required key inside an optional mapping). */
  default: unknown;
  description: string;
  /** A mapping of further keys (`data`, `data.synthetic`). */
  section: boolean;
}

type Json = Record<string, unknown>;

const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** 2^53 - 1: zod writes it as the bound of every integer; it says nothing to a reader. */
const SAFE = Number.MAX_SAFE_INTEGER;

function numberType(s: Json, name: string): string {
  const lo = typeof s.minimum === 'number' && s.minimum > -SAFE ? { v: s.minimum, open: false } : typeof s.exclusiveMinimum === 'number' ? { v: s.exclusiveMinimum, open: true } : null;
  const hi = typeof s.maximum === 'number' && s.maximum < SAFE ? { v: s.maximum, open: false } : typeof s.exclusiveMaximum === 'number' ? { v: s.exclusiveMaximum, open: true } : null;
  if (lo && hi) return `${name} in ${lo.open ? '(' : '['}${lo.v}, ${hi.v}${hi.open ? ')' : ']'}`;
  if (lo) return `${name} ${lo.open ? '>' : '>='} ${lo.v}`;
  if (hi) return `${name} ${hi.open ? '<' : '<='} ${hi.v}`;
  return name;
}

/** A JSON Schema node as a short readable type. */
export function typeOf(s: Json): string {
  if ('const' in s) return String(s.const);
  if (Array.isArray(s.enum)) return s.enum.map(String).join(' | ');
  const alternatives = (s.anyOf ?? s.oneOf) as Json[] | undefined;
  if (Array.isArray(alternatives)) return [...new Set(alternatives.map(typeOf))].join(' | ');
  if (Array.isArray(s.type)) return s.type.map((t) => typeOf({ ...s, type: t })).join(' | ');
  switch (s.type) {
    case 'integer':
      return numberType(s, 'integer');
    case 'number':
      return numberType(s, 'number');
    case 'string':
      return typeof s.pattern === 'string' ? `string matching /${s.pattern}/` : 'string';
    case 'boolean':
      return 'boolean';
    case 'null':
      return 'null';
    case 'array': {
      const item = isObj(s.items) ? typeOf(s.items) : 'value';
      const n = typeof s.minItems === 'number' && s.minItems > 0 ? ` (at least ${s.minItems})` : '';
      return `list of ${item.includes('|') ? `(${item})` : item}${n}`;
    }
    case 'object':
      return 'mapping';
    default:
      return 'value';
  }
}

/** The object alternatives of a node (a mapping, or a mapping-or-null, or a union of mappings). */
function mappings(s: Json): Json[] {
  if (s.type === 'object' && isObj(s.properties)) return [s];
  const alternatives = (s.anyOf ?? s.oneOf) as Json[] | undefined;
  return Array.isArray(alternatives) ? alternatives.flatMap(mappings) : [];
}

let cached: KeyInfo[] | null = null;

/** Every key of the config schema in schema order, each section's own keys before its sub-sections. */
export function describeKeys(): KeyInfo[] {
  if (cached) return cached;
  const root = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Json;
  const out: KeyInfo[] = [];
  const seen = new Set<string>();
  // A section's own keys first, then its sub-sections, so a listing reads section by section.
  const walk = (node: Json, prefix: string) => {
    const entries = Object.entries((node.properties ?? {}) as Record<string, Json>);
    const isSection = (raw: Json) => raw.type === 'object' && mappings(raw).length > 0;
    for (const [name, raw] of [...entries.filter(([, r]) => !isSection(r)), ...entries.filter(([, r]) => isSection(r))]) {
      const key = prefix ? `${prefix}.${name}` : name;
      const section = isSection(raw);
      if (!seen.has(key)) {
        seen.add(key);
        out.push({ key, type: section ? 'section' : typeOf(raw), default: raw.default, description: typeof raw.description === 'string' ? raw.description : '', section });
      }
      // Free-form values (finetune.unfreeze, its stop rule) list their inner keys too.
      for (const sub of mappings(raw)) walk(sub, key);
    }
  };
  walk(root, '');
  cached = out;
  return out;
}

/** The entry of one dotted key (array indices dropped: `eval.ood.0` → `eval.ood`), if the schema has it. */
export function keyInfo(path: ReadonlyArray<string | number>): KeyInfo | undefined {
  const key = path.filter((p) => typeof p === 'string').join('.');
  return describeKeys().find((k) => k.key === key);
}
