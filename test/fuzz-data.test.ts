import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import sharp from 'sharp';
import * as YAML from 'yaml';
import { resolveConfig } from '../src/config/load';
import { loadCatalog } from '../src/data';
import { decodeAll } from '../src/data/formats/decode';
import { planSweep } from '../src/sweep/plan';
import { cleanOutcome, FUZZ_RUNS as RUNS, tmpDir } from './helpers';

/**
 * Dataset and sweep parsers fed random and mutated input: a value or a
 * UsageError (exit 2 with a message), never another exception; a broken image
 * is reported as skipped, never thrown.
 */

const mutated = (text: string) =>
  fc.tuple(fc.nat(text.length), fc.nat(30), fc.oneof(fc.string(), fc.constantFrom(',', '"', '\n', '\r\n', ':', '{', '}', '[', ']', 'NaN', '-Infinity', 'null', '\u0000', ' '))).map(([at, len, ins]) => text.slice(0, at) + ins + text.slice(Math.min(text.length, at + len)));

const silent = () => undefined;

test('taxonomy.csv: random and mutated files give a catalog or a usage error', () => {
  const root = tmpDir();
  for (const split of ['train', 'test']) for (const leaf of ['a1', 'a2', 'b1']) {
    fs.mkdirSync(path.join(root, split, leaf), { recursive: true });
    fs.writeFileSync(path.join(root, split, leaf, 'x.png'), 'not decoded by the catalog');
  }
  const good = 'family,genus,species\nF1,Alpha,a1\nF1,Alpha,a2\nF2,Beta,b1\n';
  const cfg = resolveConfig([{ data: { format: 'imagefolder', root } }]);
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), good);
  assert.equal(loadCatalog(cfg, silent).hierarchy.classes.length, 3, 'the unmutated fixture loads');
  fc.assert(
    fc.property(fc.oneof(mutated(good), fc.string()), (text) => {
      fs.writeFileSync(path.join(root, 'taxonomy.csv'), text);
      cleanOutcome(() => loadCatalog(cfg, silent));
    }),
    { numRuns: RUNS },
  );
});

test('iNat JSON: random and mutated annotation files give a catalog or a usage error', () => {
  const root = tmpDir();
  const doc = (prefix: string) =>
    JSON.stringify({
      info: { year: 2021 },
      images: [{ id: 1, file_name: `${prefix}/1.jpg`, latitude: 'NaN' }, { id: 2, file_name: `${prefix}/2.jpg` }],
      categories: [
        { id: 0, kingdom: 'K', phylum: 'P', class: 'C', order: 'O', family: 'F', genus: 'G', name: 'G a' },
        { id: 1, kingdom: 'K', phylum: 'P', class: 'C', order: 'O', family: 'F', genus: 'H', name: 'H b' },
      ],
      annotations: [{ id: 1, image_id: 1, category_id: 0 }, { id: 2, image_id: 2, category_id: 1 }],
    }).replace('"NaN"', 'NaN');
  for (const p of ['train', 'val']) {
    fs.mkdirSync(path.join(root, p), { recursive: true });
    for (const i of [1, 2]) fs.writeFileSync(path.join(root, p, `${i}.jpg`), 'x');
  }
  fs.writeFileSync(path.join(root, 'val.json'), doc('val'));
  const cfg = resolveConfig([{ data: { format: 'inat2021', root } }]);
  fs.writeFileSync(path.join(root, 'train.json'), doc('train'));
  assert.equal(loadCatalog(cfg, silent).hierarchy.classes.length, 2, 'the unmutated fixture loads');
  fc.assert(
    fc.property(fc.oneof(mutated(doc('train')), fc.string(), fc.jsonValue().map((v) => JSON.stringify(v))), (text) => {
      fs.writeFileSync(path.join(root, 'train.json'), text);
      cleanOutcome(() => loadCatalog(cfg, silent));
    }),
    { numRuns: RUNS },
  );
});

test('wordnet.is_a.txt: random and mutated edge lists give a catalog or a usage error', () => {
  const root = tmpDir();
  for (const split of ['train', 'test']) for (const wnid of ['n02', 'n03']) {
    fs.mkdirSync(path.join(root, split, wnid), { recursive: true });
    fs.writeFileSync(path.join(root, split, wnid, 'x.png'), 'x');
  }
  const good = 'n00 n01\nn01 n02\nn01 n03\nn00 n03\n';
  const cfg = resolveConfig([{ data: { format: 'wordnet', root } }]);
  fs.writeFileSync(path.join(root, 'wordnet.is_a.txt'), good);
  assert.equal(loadCatalog(cfg, silent).hierarchy.classes.length, 2, 'the unmutated fixture loads');
  fc.assert(
    fc.property(fc.oneof(mutated(good), fc.string()), (text) => {
      fs.writeFileSync(path.join(root, 'wordnet.is_a.txt'), text);
      cleanOutcome(() => loadCatalog(cfg, silent));
    }),
    { numRuns: RUNS },
  );
});

test('sweep files: random and mutated documents give a plan or a usage error', () => {
  const good = 'name: s\nstages:\n  pretrain:\n    grid: { train.level: [leaf, top], seed: [0, 1] }\n  finetune:\n    from: pretrain\n    grid: { finetune.freeze: [all, 0] }\n    set: { train.level: top }\n    scratch: true\n';
  // 4 pretraining runs, 4 x 2 fine-tuning runs, and a baseline per seed and freeze value.
  assert.equal(planSweep(YAML.parse(good)).runs.length, 4 + 8 + 4, 'the unmutated sweep plans every run');
  fc.assert(
    fc.property(fc.oneof(mutated(good), fc.jsonValue().map((v) => YAML.stringify(v))), (text) => {
      let doc: unknown;
      try {
        doc = YAML.parse(text);
      } catch {
        return; // the sweep loader reports YAML syntax errors itself; this checks the planner
      }
      cleanOutcome(() => planSweep(doc));
    }),
    { numRuns: RUNS },
  );
});

test('image decoding: truncated and mutated PNG/JPEG bytes are reported as bad, never thrown', async () => {
  const png = await sharp({ create: { width: 10, height: 10, channels: 3, background: { r: 200, g: 30, b: 90 } } }).png().toBuffer();
  const jpg = await sharp(png).jpeg().toBuffer();
  const ok = await decodeAll([{ read: () => png }], 8, 3, 1);
  assert.equal(ok.bad.length, 0, 'the unmutated PNG decodes');
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(png, jpg), fc.nat(), fc.nat(40), fc.uint8Array({ maxLength: 16 }), async (img, at, cut, junk) => {
      const i = at % img.length;
      const bytes = Buffer.concat([img.subarray(0, i), Buffer.from(junk), img.subarray(Math.min(img.length, i + cut))]);
      const out = await decodeAll([{ read: () => bytes }], 8, 3, 1);
      assert.equal(out.pixels.length, 8 * 8 * 3);
      assert.ok(out.bad.length <= 1);
    }),
    { numRuns: RUNS },
  );
});
