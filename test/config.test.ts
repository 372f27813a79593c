import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { configKeys, deepMerge, parseSets, readConfigFile, resolveConfig } from '../src/config/load';
import { configSchema, defaultConfig } from '../src/config/schema';
import { UsageError } from '../src/util/errors';

function tmpFile(name: string, text: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'granular-config-'));
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

/** Asserts `fn` throws a UsageError whose message matches every pattern; returns the message. */
function usageError(fn: () => unknown, ...patterns: RegExp[]): string {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof UsageError, `expected a UsageError, got ${caught === undefined ? 'no error' : String(caught)}`);
  for (const p of patterns) assert.match(caught.message, p);
  return caught.message;
}

test('defaults parse, and an empty layer list resolves to the defaults with seeds filled in', () => {
  const d = defaultConfig();
  assert.equal(d.seed, 0);
  assert.equal(d.data.format, 'synthetic');
  assert.equal(d.data.seed, null, 'the schema leaves data.seed unset; resolveConfig fills it');
  assert.deepEqual(d.data.synthetic.branching, [2, 3, 4]);
  assert.equal(d.train.epochs, 30);
  const r = resolveConfig([]);
  assert.equal(r.data.seed, 0);
  assert.equal(r.train.seed, 0);
  // Defaults are a fixed point of the schema.
  assert.deepEqual(configSchema.parse(JSON.parse(JSON.stringify(d))), d);
});

test('configKeys lists leaves and sections, and the contract keys exist', () => {
  const keys = configKeys();
  for (const k of [
    'seed', 'name', 'data', 'data.seed', 'train.seed', 'data.format', 'data.root', 'data.taxonomy',
    'data.annotations.train', 'data.annotations.test', 'data.is_a', 'data.words', 'data.include',
    'data.exclude', 'data.train_size', 'data.train_per_class', 'data.test_size', 'data.val_fraction',
    'data.image_size', 'data.channels', 'data.label_noise', 'data.relabel', 'model.arch', 'model.width',
    'train.level', 'train.epochs', 'train.batch_size', 'train.lr', 'train.optimizer', 'train.weight_decay',
    'train.schedule', 'train.loss', 'finetune.freeze', 'finetune.head', 'finetune.unfreeze', 'eval.ood',
  ]) {
    assert.ok(keys.includes(k), `missing config key ${k}`);
  }
  assert.ok(!keys.includes('data.source'), 'data.source is an alias, not a key of its own');
});

test('a config file with valid keys is read and merged over the defaults', () => {
  const file = tmpFile('ok.yaml', 'name: demo\ntrain:\n  epochs: 5\n  lr: 0.5\ndata:\n  synthetic:\n    branching: [3, 2]\n');
  const partial = readConfigFile(file);
  assert.deepEqual(partial, { name: 'demo', train: { epochs: 5, lr: 0.5 }, data: { synthetic: { branching: [3, 2] } } });
  const cfg = resolveConfig([partial]);
  assert.equal(cfg.name, 'demo');
  assert.equal(cfg.train.epochs, 5);
  assert.equal(cfg.train.lr, 0.5);
  assert.equal(cfg.train.batch_size, 64, 'untouched keys keep their default');
  assert.deepEqual(cfg.data.synthetic.branching, [3, 2]);
  assert.equal(cfg.data.synthetic.patch_size, 8, 'sibling keys of a nested override keep their default');
});

test('an empty config file is an empty layer', () => {
  assert.deepEqual(readConfigFile(tmpFile('empty.yaml', '# nothing here\n')), {});
});

test('an unknown key in a config file names the key and suggests the nearest one', () => {
  const file = tmpFile('typo.yaml', 'train:\n  epoch: 5\n');
  const msg = usageError(() => readConfigFile(file), /'train\.epoch'/, /Did you mean 'train\.epochs'\?/);
  assert.ok(msg.includes(file), 'the message says which file');
  // A deeper typo and a top-level one.
  usageError(() => readConfigFile(tmpFile('t2.yaml', 'data:\n  synthetic:\n    patch_sise: 4\n')), /'data\.synthetic\.patch_sise'/, /Did you mean 'data\.synthetic\.patch_size'/);
  usageError(() => readConfigFile(tmpFile('t3.yaml', 'sede: 3\n')), /'sede'/, /Did you mean 'seed'/);
  // Something nowhere near any key gets no suggestion.
  const far = usageError(() => readConfigFile(tmpFile('t4.yaml', 'train:\n  zzzzzzzzzzzzzzzzzzzz: 1\n')), /'train\.zzzzzzzzzzzzzzzzzzzz'/);
  assert.doesNotMatch(far, /Did you mean/);
});

test('a config file that is not a mapping is refused', () => {
  usageError(() => readConfigFile(tmpFile('list.yaml', '- a\n- b\n')), /mapping/, /a list/);
  usageError(() => readConfigFile(path.join(os.tmpdir(), 'granular-no-such-dir', 'x.yaml')), /cannot read config file/);
});

test('invalid YAML reports the line number', () => {
  // Lines 1-3 are fine; line 5 is indented under the scalar value of line 4, which
  // YAML reads as a mapping nested in a compact one: the error is at line 4 or 5.
  const file = tmpFile('bad.yaml', 'name: demo\nseed: 1\ntrain:\n  epochs: 5\n    lr: 0.1\n');
  const msg = usageError(() => readConfigFile(file), /not valid YAML/, /line \d+/);
  const line = Number(/line (\d+)/.exec(msg)![1]);
  assert.ok(line === 4 || line === 5, `line ${line} should point at the broken lines 4-5`);
  // A duplicate key is an error too, on the line of the second occurrence.
  const dup = usageError(() => readConfigFile(tmpFile('dup.yaml', 'seed: 1\nname: a\nseed: 2\n')), /line 3/);
  assert.match(dup, /not valid YAML/);
});

test('--set parses YAML values: numbers, booleans, null, strings, flow lists', () => {
  const s = parseSets(['train.epochs=7', 'train.lr=1e-3', "eval.ood=[contrast, jpeg]", 'data.train_size=null', 'name=abc', 'data.synthetic.branching=[2,2,2]']);
  assert.deepEqual(s, {
    train: { epochs: 7, lr: 0.001 },
    eval: { ood: ['contrast', 'jpeg'] },
    data: { train_size: null, synthetic: { branching: [2, 2, 2] } },
    name: 'abc',
  });
  const cfg = resolveConfig([s]);
  assert.equal(cfg.train.epochs, 7);
  assert.deepEqual(cfg.eval.ood, ['contrast', 'jpeg']);
  // A level spec with a colon is a plain string.
  assert.deepEqual(parseSets(['train.level=depth:2']), { train: { level: 'depth:2' } });
  // `=` inside the value stays in the value.
  assert.deepEqual(parseSets(['name=a=b']), { name: 'a=b' });
});

test('--set data.source is an alias of data.format (in a file too)', () => {
  assert.deepEqual(parseSets(['data.source=imagefolder']), { data: { format: 'imagefolder' } });
  assert.equal(resolveConfig([parseSets(['data.source=wordnet'])]).data.format, 'wordnet');
  const file = tmpFile('alias.yaml', 'data:\n  source: omniglot\n');
  assert.deepEqual(readConfigFile(file), { data: { format: 'omniglot' } });
});

test('--set with a section value checks the keys inside it', () => {
  assert.deepEqual(parseSets(['train={epochs: 3, lr: 0.2}']), { train: { epochs: 3, lr: 0.2 } });
  usageError(() => parseSets(['train={epoch: 3}']), /'train\.epoch'/, /train\.epochs/);
  // finetune.unfreeze is free-form: nested keys pass through.
  assert.deepEqual(parseSets(['finetune.unfreeze={every: 2, blocks: 1}']), { finetune: { unfreeze: { every: 2, blocks: 1 } } });
});

test('--set: bad syntax, unknown keys and bad values fail with the key named', () => {
  usageError(() => parseSets(['train.epochs']), /key=value/);
  usageError(() => parseSets(['=3']), /key=value/);
  usageError(() => parseSets(['train.epoch=3']), /'train\.epoch'/, /Did you mean 'train\.epochs'\?/);
  usageError(() => parseSets(['epochs=3']), /Did you mean 'train\.epochs'\?/);
  usageError(() => parseSets(['eval.ood=[a, b']), /not valid YAML/);
  // Type errors surface at resolve time and name the key.
  usageError(() => resolveConfig([parseSets(['train.epochs=many'])]), /train\.epochs/);
  usageError(() => resolveConfig([parseSets(['train.epochs=2.5'])]), /train\.epochs/);
  usageError(() => resolveConfig([parseSets(['train.optimizer=rmsprop'])]), /train\.optimizer/);
  usageError(() => resolveConfig([parseSets(['data.channels=2'])]), /data\.channels/);
  usageError(() => resolveConfig([parseSets(['data.val_fraction=0.95'])]), /data\.val_fraction/);
  usageError(() => resolveConfig([parseSets(['name=a/b'])]), /name/);
  usageError(() => resolveConfig([parseSets(['data.relabel=random_split'])]), /data\.relabel/);
  assert.equal(resolveConfig([parseSets(['data.relabel=random_split:3'])]).data.relabel, 'random_split:3');
  assert.equal(resolveConfig([parseSets(['finetune.freeze=all'])]).finetune.freeze, 'all');
  usageError(() => resolveConfig([parseSets(['finetune.freeze=some'])]), /finetune\.freeze/);
});

test('precedence: defaults < file < --set; objects merge, arrays replace', () => {
  const file = tmpFile('layer.yaml', [
    'seed: 4',
    'train:',
    '  epochs: 5',
    '  lr: 0.5',
    'eval:',
    '  ood: [contrast, jpeg, pixelate]',
    'data:',
    '  synthetic:',
    '    branching: [2, 2, 2, 2]',
    '    noise: 0.3',
  ].join('\n'));
  const sets = parseSets(['train.epochs=9', 'eval.ood=[brightness]', 'data.synthetic.branching=[5, 5]']);
  const cfg = resolveConfig([readConfigFile(file), sets]);
  assert.equal(cfg.train.epochs, 9, '--set beats the file');
  assert.equal(cfg.train.lr, 0.5, 'the file beats the default; --set on a sibling does not reset it');
  assert.equal(cfg.train.batch_size, 64, 'the default survives');
  assert.deepEqual(cfg.eval.ood, ['brightness'], 'arrays replace, not concatenate');
  assert.deepEqual(cfg.data.synthetic.branching, [5, 5], 'a shorter array replaces a longer one');
  assert.equal(cfg.data.synthetic.noise, 0.3);
  assert.equal(cfg.seed, 4);
  // Later layers win in general, and repeated --set of the same key takes the last.
  assert.equal(resolveConfig([{ train: { epochs: 1 } }, { train: { epochs: 2 } }, { train: { epochs: 3 } }]).train.epochs, 3);
  assert.equal(resolveConfig([parseSets(['train.epochs=1', 'train.epochs=2'])]).train.epochs, 2);
  // A section given as an object in one --set and a key in another merge.
  assert.deepEqual(parseSets(['train={epochs: 3}', 'train.lr=0.2']), { train: { epochs: 3, lr: 0.2 } });
  // null is a value that replaces (it does not mean "keep").
  assert.equal(resolveConfig([{ data: { train_size: 10 } }, parseSets(['data.train_size=null'])]).data.train_size, null);
});

test('deepMerge merges objects, replaces arrays and does not mutate its inputs', () => {
  const a = { x: { y: 1, z: [1, 2] }, w: 1 };
  const b = { x: { z: [3] }, v: 2 };
  const m = deepMerge(a, b);
  assert.deepEqual(m, { x: { y: 1, z: [3] }, w: 1, v: 2 });
  assert.deepEqual(a, { x: { y: 1, z: [1, 2] }, w: 1 });
  assert.deepEqual(b, { x: { z: [3] }, v: 2 });
});

test('seed propagates to data.seed and train.seed unless they are set', () => {
  const c1 = resolveConfig([parseSets(['seed=7'])]);
  assert.equal(c1.data.seed, 7);
  assert.equal(c1.train.seed, 7);
  const c2 = resolveConfig([parseSets(['seed=7', 'data.seed=3'])]);
  assert.equal(c2.data.seed, 3, 'an explicit data.seed is kept');
  assert.equal(c2.train.seed, 7);
  const c3 = resolveConfig([parseSets(['seed=7', 'train.seed=0'])]);
  assert.equal(c3.data.seed, 7);
  assert.equal(c3.train.seed, 0, 'an explicit train.seed of 0 is kept (0 is not "unset")');
  // The explicit finer seed set in a file survives a --set seed in a later layer.
  const file = tmpFile('seeds.yaml', 'data:\n  seed: 11\n');
  const c4 = resolveConfig([readConfigFile(file), parseSets(['seed=5'])]);
  assert.equal(c4.data.seed, 11);
  assert.equal(c4.train.seed, 5);
});
