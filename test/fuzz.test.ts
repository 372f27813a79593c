import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { parseConfigYaml, parseSets, readConfigFile, resolveConfig } from '../src/config/load';
import { treeFromDag } from '../src/hierarchy/tree';
import { cleanOutcome, FUZZ_RUNS as RUNS, QUICKSTART, tmpDir } from './helpers';

/**
 * Parsers of user input, fed random and mutated input: the outcome is a value
 * or a UsageError (exit 2 with a message), never any other exception.
 */

const quickstart = fs.readFileSync(QUICKSTART, 'utf8');

/** Mutations of a valid file: delete, duplicate, or replace a span with random text. */
const mutated = (text: string) =>
  fc.tuple(fc.nat(text.length), fc.nat(40), fc.oneof(fc.string(), fc.constantFrom(':', '- ', '{', '[', '"', '\t', '\n  ', '&a', '*a', '!!', '? ', '|', '#'))).map(([at, len, ins]) => text.slice(0, at) + ins + text.slice(Math.min(text.length, at + len)));

test('config files: random and mutated YAML never escape as anything but a usage error', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'c.yaml');
  fc.assert(
    fc.property(fc.oneof(mutated(quickstart), fc.string(), fc.jsonValue().map((v) => JSON.stringify(v))), (text) => {
      fs.writeFileSync(file, text);
      cleanOutcome(() => resolveConfig([readConfigFile(file)]));
      cleanOutcome(() => parseConfigYaml(text, file));
    }),
    { numRuns: RUNS },
  );
});

test('--set items: random keys and values never escape as anything but a usage error', () => {
  const key = fc.oneof(fc.constantFrom('train.epochs', 'train.lr', 'data.synthetic.branching', 'model.arch', 'finetune.unfreeze', 'finetune.freeze', 'eval.ood', 'seed', 'data'), fc.string());
  fc.assert(
    fc.property(fc.array(fc.tuple(key, fc.oneof(fc.string(), fc.jsonValue().map((v) => JSON.stringify(v)))), { maxLength: 4 }), (items) => {
      cleanOutcome(() => resolveConfig([parseSets(items.map(([k, v]) => `${k}=${v}`))]));
    }),
    { numRuns: RUNS },
  );
});

test('is-a edge lists: random graphs (cycles, unreachable nodes) become a tree or a clear error', () => {
  const node = fc.constantFrom('r', 'a', 'b', 'c', 'd', 'e', 'f');
  fc.assert(
    fc.property(fc.array(fc.tuple(node, node), { maxLength: 12 }), fc.uniqueArray(node, { minLength: 1, maxLength: 4 }), (edges, classes) => {
      cleanOutcome(() => {
        const h = treeFromDag(edges, 'r', classes);
        // A tree came out: every class reaches the root, and depth cuts refine.
        for (const c of classes) assert.ok(h.lineage(c).length >= 1 || c === 'r');
      });
    }),
    { numRuns: RUNS },
  );
});
