import { Command } from 'commander';
import * as YAML from 'yaml';
import { parseSets, readConfigFiles, resolveConfig } from '../config/load';
import { describeKeys, KeyInfo } from '../config/keys';
import { originOf } from '../config/provenance';
import { Config } from '../config/schema';
import { exitQuietlyOnEpipe } from '../util/stdout';
import { action, collect } from './common';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A value on one line, as YAML reads it back (`[2, 3, 4]`, `null`, `depth:2`). */
function flowValue(v: unknown): string {
  return YAML.stringify(v, { collectionStyle: 'flow', flowCollectionPadding: false, lineWidth: 0 }).trim();
}

/**
 * The resolved config as YAML, every value marked with where it came from
 * (`# default` where nobody set it), comments aligned. Valid YAML: it can be
 * given back with --config.
 */
export function annotatedYaml(cfg: Config, layers: readonly Obj[]): string {
  const lines: Array<[string, string | null]> = [];
  const walk = (o: Obj, path: string[], indent: string) => {
    for (const [k, v] of Object.entries(o)) {
      const p = [...path, k];
      if (isObj(v) && Object.keys(v).length) {
        lines.push([`${indent}${k}:`, null]);
        walk(v, p, indent + '  ');
        continue;
      }
      let origin = originOf(layers, p).label;
      // data.seed and train.seed left unset take the top-level seed.
      if (origin === 'default' && (p.join('.') === 'data.seed' || p.join('.') === 'train.seed')) origin = '= seed';
      lines.push([`${indent}${k}: ${flowValue(v)}`, origin]);
    }
  };
  walk(cfg as unknown as Obj, [], '');
  const width = Math.min(60, Math.max(...lines.filter(([, c]) => c !== null).map(([l]) => l.length)));
  return lines.map(([l, c]) => (c === null ? l : `${l.padEnd(width)}  # ${c}`)).join('\n') + '\n';
}

/** `granular config --keys`: key, type, default, description; one line each, sections as headings. */
export function keysTable(keys: readonly KeyInfo[]): string {
  const cells = (k: KeyInfo) => [k.key, k.type, k.default === undefined ? '(required)' : flowValue(k.default)];
  const leaves = keys.filter((k) => !k.section).map(cells);
  const caps = [36, 34, 14];
  const widths = caps.map((cap, j) => Math.min(cap, Math.max(...leaves.map((r) => r[j].length))));
  // A cell longer than its column pushes the rest of its line right rather than being cut.
  const row = (c: string[], desc: string) => {
    let line = '  ';
    let col = 2;
    c.forEach((x, j) => {
      col += widths[j] + 2;
      line += x;
      line = line.length < col ? line.padEnd(col) : line + '  ';
    });
    return line + desc;
  };
  const out = [row(['key', 'type', 'default'], 'description')];
  for (const k of keys) out.push(...(k.section ? ['', `${k.key}: ${k.description}`] : [row(cells(k), k.description)]));
  return out.join('\n') + '\n';
}

export function configCommand(): Command {
  return new Command('config')
    .description('print the resolved config with where each value came from (defaults marked), or list every config key (--keys)')
    .option('--config <file>', 'YAML config (defaults < file < --set); repeatable: files compose in order, a later one overriding an earlier one', collect, [])
    .option('--set <key=value>', 'override a config key (repeatable; value parsed as YAML)', collect, [])
    .option('--keys', 'list every config key: type, default, description', false)
    .option('--json', 'machine-readable output', false)
    .addHelpText(
      'after',
      `
The printed config is valid YAML: save it and pass it back with --config.
Keys are set in a config file or with --set section.key=value on pretrain, finetune,
eval (eval.* only), hierarchy and config.

  granular config --keys
  granular config --config configs/quickstart.yaml --set train.epochs=5
  granular config --config configs/recipes/small-images.yaml --config my-data.yaml   # composed: later wins
  granular config --keys | grep unfreeze`,
    )
    .action(
      action(async (o: Record<string, unknown>) => {
        exitQuietlyOnEpipe();
        if (o.keys) {
          if ((o.config as string[]).length || (o.set as string[]).length) process.stderr.write('granular: --keys lists the schema; --config and --set are not used\n');
          const keys = describeKeys();
          process.stdout.write(o.json ? JSON.stringify(keys, null, 2) + '\n' : keysTable(keys));
          return 0;
        }
        const layers: Obj[] = [];
        layers.push(...readConfigFiles(o.config as string[]));
        layers.push(parseSets(o.set as string[]));
        const cfg = resolveConfig(layers);
        if (o.json) {
          process.stdout.write(JSON.stringify(cfg, null, 2) + '\n');
          return 0;
        }
        const order = ['schema defaults', ...(o.config as string[]), ...((o.set as string[]).length ? ['--set'] : [])].join(' < ');
        process.stdout.write(`# resolved config (${order}); '# default' marks values nobody set.\n# 'granular config --keys' describes every key.\n`);
        process.stdout.write(annotatedYaml(cfg, layers));
        return 0;
      }),
    );
}
