import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { scanTopLevelArrays } from '../src/data/formats/jsonscan';
import { UsageError } from '../src/util/errors';
import { cli, readJson, tmpDir } from './helpers';
import { writeImage } from './data-fixtures';

/** kingdom..genus, name — genus 'Alpha' occurs in two kingdoms. */
const CATS = [
  ['Animalia', 'Chordata', 'Aves', 'Passeriformes', 'Fam1', 'Alpha', 'Alpha one'],
  ['Animalia', 'Chordata', 'Aves', 'Passeriformes', 'Fam1', 'Alpha', 'Alpha two'],
  ['Animalia', 'Chordata', 'Aves', 'Passeriformes', 'Fam2', 'Beta', 'Beta three'],
  ['Plantae', 'Tracheophyta', 'Magnoliopsida', 'Rosales', 'Fam3', 'Alpha', 'Alpha four'],
];

/** A COCO-style file as the iNat 2021 release writes it, NaN location fields included. */
function cocoJson(part: string, perClass: number, start: number): string {
  const categories = CATS.map((c, id) => ({ id, kingdom: c[0], phylum: c[1], class: c[2], order: c[3], family: c[4], genus: c[5], specific_epithet: c[6].split(' ')[1], name: c[6], common_name: 'x', supercategory: c[0], image_dir_name: `${id}` }));
  const images: string[] = [];
  const annotations: string[] = [];
  let id = start;
  CATS.forEach((_, k) => {
    for (let i = 0; i < perClass; i++, id++) {
      images.push(`{"id": ${id}, "width": 12, "height": 12, "file_name": "${part}/${k}/${id}.jpg", "license": 0, "rights_holder": "a \\"quoted\\" name", "date": "2017", "latitude": NaN, "longitude": NaN, "location_uncertainty": NaN}`);
      annotations.push(`{"id": ${id}, "image_id": ${id}, "category_id": ${k}}`);
    }
  });
  return `{"info": {"year": 2021, "note": "[not an array]"}, "images": [${images.join(',\n ')}], "categories": ${JSON.stringify(categories)}, "annotations": [${annotations.join(', ')}], "licenses": [{"id": 0}]}`;
}

async function writeInat(root: string): Promise<void> {
  fs.mkdirSync(root, { recursive: true });
  fs.writeFileSync(path.join(root, 'train.json'), cocoJson('train', 5, 0));
  fs.writeFileSync(path.join(root, 'val.json'), cocoJson('val', 2, 1000));
  for (const [part, n, start] of [['train', 5, 0], ['val', 2, 1000]] as const) {
    let id = start;
    // Test images differ from every training image (a test set holding the source's training images is refused).
    for (let k = 0; k < CATS.length; k++) for (let i = 0; i < n; i++, id++) await writeImage(path.join(root, part, `${k}`, `${id}.jpg`), 'jpg', k, part === 'val' ? i + 5 : i);
  }
}

const quiet = () => {};
const cfgFor = (root: string, ...sets: string[]) => resolveConfig([parseSets(['data.format=inat2021', `data.root=${root}`, 'data.image_size=8', 'data.cache_dir=null', ...sets])]);

test('inat2021: NaN location fields, taxonomy levels, genus names told apart by path', async () => {
  const root = tmpDir();
  await writeInat(root);
  const lines: string[] = [];
  const ds = await loadDataset(cfgFor(root), (l) => lines.push(l));
  assert.match(lines.join('\n'), /parsed train\.json \(.* 20 images, 20 annotations, 4 categories\) in [\d.]+ s/);
  const h = ds.hierarchy;
  assert.equal(ds.train.y.length, 20);
  assert.equal(ds.test.y.length, 8);
  assert.equal(h.resolveLevel('kingdom').classes.length, 2);
  assert.equal(h.resolveLevel('genus').classes.length, 3);
  assert.deepEqual(h.resolveLevel('species').classes.length, 4);
  assert.ok(h.classes.map((c) => h.path(c)).includes('Plantae/Tracheophyta/Magnoliopsida/Rosales/Fam3/Alpha/Alpha four'));
  // An ambiguous include is an error listing both genera.
  await assert.rejects(loadDataset(cfgFor(root, 'data.include=[Alpha]'), quiet), (e: Error) => {
    assert.ok(e instanceof UsageError);
    assert.match(e.message, /'Alpha' is ambiguous: 2 nodes.*Animalia\/.*\/Fam1\/Alpha.*Plantae\/.*\/Fam3\/Alpha/);
    return true;
  });
  const animals = await loadDataset(cfgFor(root, 'data.include=[Animalia/Chordata/Aves/Passeriformes/Fam1/Alpha]'), quiet);
  assert.equal(animals.hierarchy.classes.length, 2);
});

test('inat2021: the element scanner streams nested arrays and strings with brackets', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'a.json');
  fs.writeFileSync(file, '{"x": [1, 2], "images": [{"id": 1, "s": "]}[{", "n": {"a": [NaN]}}, {"id": 2, "loc": -NaN}], "z": "images"}');
  const got: unknown[] = [];
  scanTopLevelArrays(file, new Set(['images']), (_k, el) => got.push(el));
  assert.deepEqual(got, [{ id: 1, s: ']}[{', n: { a: [null] } }, { id: 2, loc: null }]);
  fs.writeFileSync(file, '{"images": [{"id": 1}');
  assert.throws(() => scanTopLevelArrays(file, new Set(['images']), () => {}), /truncated/);
});

test('inat2021: unknown category, missing image file: usage errors naming them', async () => {
  const root = tmpDir();
  await writeInat(root);
  fs.rmSync(path.join(root, 'train/1/5.jpg'));
  await assert.rejects(loadDataset(cfgFor(root), quiet), /1 annotated image\(s\) are missing .*: train\/1\/5\.jpg/);
  await writeImage(path.join(root, 'train/1/5.jpg'), 'jpg', 1, 0);
  const text = fs.readFileSync(path.join(root, 'val.json'), 'utf8').replace('"image_id": 1000, "category_id": 0', '"image_id": 1000, "category_id": 99');
  fs.writeFileSync(path.join(root, 'val.json'), text);
  await assert.rejects(loadDataset(cfgFor(root), quiet), /val\.json: 1 annotation\(s\) name an unknown category: image 1000 -> category 99/);
});

test('inat2021: pretrain at species, fine-tune at kingdom through the CLI', async () => {
  const root = tmpDir();
  await writeInat(root);
  const runs = tmpDir();
  const s = ['--set', 'data.format=inat2021', '--set', `data.root=${root}`, '--set', 'data.image_size=8', '--set', 'data.cache_dir=null', '--set', 'train.epochs=1', '--set', 'data.val_fraction=0'];
  const pre = cli(['pretrain', ...s, '--level', 'species', '--run-dir', path.join(runs, 'p')]);
  assert.equal(pre.code, 0, pre.stderr);
  const fin = cli(['finetune', '--from', path.join(runs, 'p'), '--level', 'kingdom', '--freeze', 'all', '--run-dir', path.join(runs, 'f')]);
  assert.equal(fin.code, 0, fin.stderr);
  assert.equal(readJson(path.join(runs, 'f', 'summary.json')).num_classes, 2);
});
