import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { configKeys, parseSets, readConfigFile, resolveConfig } from '../src/config/load';
import { describeKeys } from '../src/config/keys';
import { UsageError } from '../src/util/errors';
import { cli, needsPty, QUICKSTART, tmpDir, tty } from './helpers';

test('every config key and section has a one-line description, a type and (outside free-form values) a default', () => {
  const keys = describeKeys();
  const listed = new Set(keys.map((k) => k.key));
  for (const k of configKeys()) assert.ok(listed.has(k), `config --keys misses ${k}`);
  for (const k of keys) {
    assert.ok(k.description.length >= 8, `${k.key} has no description`);
    assert.ok(!k.description.includes('\n'), `${k.key}: the description is one line`);
    assert.ok(k.type.length > 0);
    if (!k.key.startsWith('finetune.unfreeze.')) assert.notEqual(k.default, undefined, `${k.key} has no default`);
  }
  const byKey = new Map(keys.map((k) => [k.key, k]));
  assert.equal(byKey.get('train.epochs')!.type, 'integer >= 0');
  assert.equal(byKey.get('train.epochs')!.default, 30);
  assert.equal(byKey.get('finetune.freeze')!.type, 'integer >= 0 | all');
  assert.equal(byKey.get('data.val_fraction')!.type, 'number in [0, 0.9]');
  assert.equal(byKey.get('train.optimizer')!.type, 'sgd | adam');
  assert.equal(byKey.get('data.train_size')!.type, 'integer > 0 | null');
  assert.equal(byKey.get('finetune.unfreeze.every')!.default, undefined, 'required inside the schedule');
});

test('granular config --keys in a terminal lists key, type, default and description', { ...needsPty }, () => {
  const r = tty(['config', '--keys']);
  assert.equal(r.code, 0, r.screen);
  assert.match(r.screen, /^\s+train\.epochs\s+integer >= 0\s+30\s+passes over the training set$/m);
  assert.match(r.screen, /^\s+train\.optimizer\s+sgd \| adam\s+sgd\s+sgd \(with momentum\) or adam$/m);
  assert.match(r.screen, /^finetune: how a fine-tuning run uses its pretrained network/m);
  // --json: the same list for scripts.
  const j = cli(['config', '--keys', '--json']);
  assert.equal(j.code, 0, j.stderr);
  const keys = JSON.parse(j.stdout) as Array<{ key: string; default: unknown }>;
  assert.equal(keys.find((k) => k.key === 'data.synthetic.branching')!.default?.toString(), '2,3,4');
});

test('granular config prints the resolved config with each value\'s source, defaults marked, and reads back as the same config', () => {
  const r = cli(['config', '--config', QUICKSTART, '--set', 'train.epochs=5', '--set', 'finetune.freeze=all']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^ {2}epochs: 5\s+# --set$/m);
  assert.match(r.stdout, /^ {2}freeze: all\s+# --set$/m);
  assert.match(r.stdout, new RegExp(`^ {2}batch_size: 64\\s+# ${QUICKSTART.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'));
  assert.match(r.stdout, /^ {2}weight_decay: 0\s+# default$/m);
  assert.match(r.stdout, /^ {4}branching: \[2, 3, 4\]\s+# /m);
  assert.match(r.stdout, /^ {2}seed: 0\s+# = seed$/m, 'data.seed and train.seed say they follow seed');
  // Saved and given back with --config, it resolves to the same config.
  const file = path.join(tmpDir(), 'resolved.yaml');
  fs.writeFileSync(file, r.stdout);
  const again = resolveConfig([readConfigFile(file)]);
  const direct = resolveConfig([readConfigFile(QUICKSTART), parseSets(['train.epochs=5', 'finetune.freeze=all'])]);
  assert.deepEqual(again, direct);
  assert.deepEqual(YAML.parse(r.stdout).train.epochs, 5);
  // --json prints the same values.
  const j = cli(['config', '--config', QUICKSTART, '--set', 'train.epochs=5', '--set', 'finetune.freeze=all', '--json']);
  assert.deepEqual(JSON.parse(j.stdout), JSON.parse(JSON.stringify(direct)));
});

test('an unknown option that is a config key suggests the --set that sets it, exit 2, nothing written', { ...needsPty }, () => {
  const dir = path.join(tmpDir(), 'run');
  const r = tty(['pretrain', '--config', QUICKSTART, '--epochs', '2', '--run-dir', dir]);
  assert.equal(r.code, 2);
  assert.match(r.screen, /unknown option '--epochs'\. Config keys are set with --set: --set train\.epochs=2/);
  assert.equal(fs.existsSync(dir), false);
  const eq = cli(['finetune', '--batch-size=32']);
  assert.equal(eq.code, 2);
  assert.match(eq.stderr, /--set train\.batch_size=32/);
  const two = cli(['hierarchy', '--patch-size', '4']);
  assert.match(two.stderr, /one of --set data\.synthetic\.patch_size=4, --set model\.patch_size=4/);
  // A misspelt option of the command itself keeps commander's suggestion.
  const typo = cli(['pretrain', '--levl', 'top']);
  assert.equal(typo.code, 2);
  assert.match(typo.stderr, /Did you mean --level\?/);
  assert.doesNotMatch(typo.stderr, /--set/);
});

test('a type error names the value and where it came from (--set item or config file)', () => {
  const dir = path.join(tmpDir(), 'run');
  const r = cli(['pretrain', '--config', QUICKSTART, '--set', 'train.lr=abc', '--run-dir', dir]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--set train\.lr=abc: expected number > 0/);
  assert.equal(fs.existsSync(dir), false);
  const file = path.join(tmpDir(), 'bad.yaml');
  fs.writeFileSync(file, 'train:\n  epochs: 2.5\n');
  const f = cli(['config', '--config', file, '--set', 'train={optimizer: rmsprop}']);
  assert.equal(f.code, 2);
  assert.ok(f.stderr.includes(`config file '${file}': train.epochs = 2.5: expected integer >= 0`), f.stderr);
  assert.match(f.stderr, /--set 'train=\{optimizer: rmsprop\}': train\.optimizer = 'rmsprop': expected one of sgd, adam/);
  // In the library too: the message of the UsageError.
  assert.throws(() => resolveConfig([parseSets(['finetune.unfreeze={}'])]), (e: unknown) => e instanceof UsageError && /--set 'finetune\.unfreeze=\{\}': finetune\.unfreeze\.every is required \(integer > 0\)/.test(e.message));
});

test('an unknown key points at granular config --keys; a YAML error shows the line with a caret', () => {
  const r = cli(['config', '--set', 'eval.oood=[contrast]']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown config key 'eval\.oood'.*Did you mean 'eval\.ood'\?.*granular config --keys/);
  assert.doesNotMatch(r.stderr, /pretrain --help/);
  const file = path.join(tmpDir(), 'broken.yaml');
  fs.writeFileSync(file, 'name: demo\ntrain:\n  epochs: 5\n    lr: 0.1\n');
  const y = cli(['config', '--config', file]);
  assert.equal(y.code, 2);
  assert.match(y.stderr, /line 3, column 11 is not valid YAML: Nested mappings are not allowed in compact mappings\n {4} {2}epochs: 5\n {4} {10}\^/);
});

test('several --config files compose in order (later wins), each value named with its file; pretrain uses them all', () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'recipe.yaml'), 'model: { arch: cnn-small, width: 0.5 }\ntrain: { epochs: 7, lr: 0.1 }\n');
  fs.mkdirSync(path.join(dir, 'sub'));
  // A path in the second file is relative to its own folder.
  fs.writeFileSync(path.join(dir, 'sub', 'probe.yaml'), 'train: { lr: 0.2 }\nfinetune: { freeze: all }\ndata: { cache_dir: cache }\n');
  const r = cli(['config', '--config', 'recipe.yaml', '--config', 'sub/probe.yaml', '--set', 'train.epochs=3'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^# resolved config \(schema defaults < recipe\.yaml < sub\/probe\.yaml < --set\)/);
  const origin = (key: string) => r.stdout.match(new RegExp(`^\\s*${key}: (.*?)\\s+# (.*)$`, 'm'))?.slice(1);
  assert.deepEqual(origin('arch'), ['cnn-small', 'recipe.yaml'], 'the first file is not dropped');
  assert.deepEqual(origin('width'), ['0.5', 'recipe.yaml']);
  assert.deepEqual(origin('lr'), ['0.2', 'sub/probe.yaml'], 'the later file wins');
  assert.deepEqual(origin('freeze'), ['all', 'sub/probe.yaml']);
  assert.deepEqual(origin('epochs'), ['3', '--set']);
  assert.deepEqual(origin('cache_dir'), [path.join(dir, 'sub', 'cache'), 'sub/probe.yaml']);
  // The same composition drives a run.
  fs.writeFileSync(path.join(dir, 'tiny.yaml'), 'data: { synthetic: { train_samples: 240, test_samples: 120 } }\ntrain: { epochs: 2 }\n');
  fs.writeFileSync(path.join(dir, 'short.yaml'), 'train: { epochs: 1 }\n');
  const run = cli(['pretrain', '--config', QUICKSTART, '--config', 'tiny.yaml', '--config', 'short.yaml', '--run-dir', 'r', '--quiet'], { cwd: dir });
  assert.equal(run.code, 0, run.stderr);
  const cfg = YAML.parse(fs.readFileSync(path.join(dir, 'r', 'config.yaml'), 'utf8'));
  assert.equal(cfg.data.synthetic.train_samples, 240);
  assert.equal(cfg.train.epochs, 1);
  assert.equal(cfg.model.activation, 'smooth_relu', 'quickstart.yaml (the first file) still applies');
});
