import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSets, resolveConfig } from '../src/config/load';
import { loadDataset } from '../src/data';
import { coarsening } from '../src/hierarchy/tree';
import { UsageError } from '../src/util/errors';
import { cli, readJson, tmpDir } from './helpers';
import { writeFolderDataset } from './data-fixtures';

const WORDNET = path.resolve(__dirname, '..', '..', '..', 'shared', 'data', 'wordnet');
const skip = fs.existsSync(path.join(WORDNET, 'wordnet.is_a.txt')) ? {} : { skip: `../shared/data/wordnet is missing (${WORDNET})` };
const quiet = () => {};

// Tench, Chihuahua, tabby, tiger cat, and two internal synsets: dog and domestic cat.
const WNIDS = ['n01440764', 'n02085620', 'n02123045', 'n02123159', 'n02084071', 'n02121808'];

function sets(root: string, ...more: string[]): string[] {
  return ['data.format=wordnet', `data.root=${root}`, `data.is_a=${WORDNET}/wordnet.is_a.txt`, `data.words=${WORDNET}/words.txt`, 'data.image_size=8', 'data.cache_dir=null', ...more];
}

test('wordnet: real is-a graph, internal synsets as classes, names from words.txt, levels refine', skip, async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: null, leaves: Object.fromEntries(WNIDS.map((w) => [w, [3, 1]])) });
  const ds = await loadDataset(resolveConfig([parseSets(sets(root))]), quiet);
  const h = ds.hierarchy;
  assert.equal(h.root, 'n00001740');
  assert.deepEqual([...h.classes].sort(), [...WNIDS].sort());
  assert.equal(h.node('n02084071').name, 'dog, domestic dog, Canis familiaris');
  // dog is an internal node and a class; Chihuahua lies under it.
  assert.ok(h.lineage('n02085620').includes('n02084071'));
  assert.ok(h.dag && h.dag.multiParentNodes > 0, 'the WordNet graph has nodes with several parents above these classes');
  // Every level refines every coarser one.
  const levels = h.levels();
  for (let i = 1; i < levels.length; i++) assert.ok(coarsening(levels[i], levels[i - 1]), `${levels[i].name} refines ${levels[i - 1].name}`);
  // data.include by name (a synonym) and data.exclude by id.
  const dogs = await loadDataset(resolveConfig([parseSets(sets(root, 'data.include=[domestic dog, domestic cat]', 'data.exclude=[n02123159]'))]), quiet);
  assert.deepEqual([...dogs.hierarchy.classes].sort(), ['n02084071', 'n02085620', 'n02121808', 'n02123045']);
  assert.equal(dogs.train.y.length, 12);
});

test('wordnet: --level nodes:FILE trains on listed synsets and drops the rest; hierarchy reports DAG nodes', skip, async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: null, leaves: Object.fromEntries(WNIDS.map((w) => [w, [4, 2]])) });
  const nodes = path.join(root, 'pets.txt');
  fs.writeFileSync(nodes, 'n02084071\nn02121808\n');
  const args = sets(root).flatMap((s) => ['--set', s]);
  const hier = cli(['hierarchy', ...args, '--json']);
  assert.equal(hier.code, 0, hier.stderr);
  const rep = JSON.parse(hier.stdout);
  assert.ok(rep.nodes_with_several_parents > 0);
  assert.equal(rep.classes, 6);
  const text = cli(['hierarchy', ...args]);
  assert.match(text.stdout, /node\(s\) had several parents/);
  const runs = tmpDir();
  const r = cli(['pretrain', ...args, '--set', 'train.epochs=1', '--set', 'data.val_fraction=0', '--level', `nodes:${nodes}`, '--run-dir', path.join(runs, 'a')]);
  assert.equal(r.code, 0, r.stderr);
  const s = readJson(path.join(runs, 'a', 'summary.json'));
  assert.equal(s.num_classes, 2);
  const split = readJson<{ counts: { train: number; test: number } }>(path.join(runs, 'a', 'split.json'));
  // Tench falls under neither listed synset: its images are dropped.
  assert.deepEqual(split.counts, { train: 20, val: 0, test: 10 } as never);
});

test('wordnet: a cycle in is_a and an unknown wnid folder are usage errors', async () => {
  const root = tmpDir();
  await writeFolderDataset(root, { taxonomy: null, leaves: { n1: [1, 1], n2: [1, 1] } });
  fs.writeFileSync(path.join(root, 'wordnet.is_a.txt'), 'r a\na b\nb c\nc a\nc n1\nr n2\n');
  const cfg = (extra: string[] = []) => resolveConfig([parseSets(['data.format=wordnet', `data.root=${root}`, 'data.image_size=8', 'data.cache_dir=null', ...extra])]);
  await assert.rejects(loadDataset(cfg(), quiet), (e: Error) => e instanceof UsageError && /cycle/.test(e.message) && /\ba\b|\bb\b|\bc\b/.test(e.message));
  fs.writeFileSync(path.join(root, 'wordnet.is_a.txt'), 'r n1\n');
  await assert.rejects(loadDataset(cfg(), quiet), /1 class folder\(s\) are not nodes of .*: n2/);
  // Two roots are joined under a virtual one.
  fs.writeFileSync(path.join(root, 'wordnet.is_a.txt'), 'r n1\ns n2\n');
  const ds = await loadDataset(cfg(), quiet);
  assert.equal(ds.hierarchy.resolveLevel('depth:1').classes.length, 2);
});
