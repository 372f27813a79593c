import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '../src/models/smooth-relu';
import { parseConfigYaml } from '../src/config/load';
import { loadDataset } from '../src/data';
import { gatherFloats } from '../src/data/cache/store';
import { makeSplit } from '../src/data/labels/split';
import { cli, metricRows, QUICKSTART, readJson, tmpDir, TINY } from './helpers';
import { loadOneDnn } from '../src/engine/native-kernels';

const base = ['--config', QUICKSTART, ...TINY, '--quiet'];
/** What --backend auto picks here (no tensorflow binding installed): native when its kernels are built, else wasm. */
const AUTO_BACKEND = loadOneDnn().addon ? 'native' : 'wasm';

test('--help lists every command', () => {
  const r = cli(['--help']);
  assert.equal(r.code, 0);
  for (const c of ['pretrain', 'finetune', 'hierarchy', 'quickstart', 'doctor']) assert.match(r.stdout, new RegExp(`\\b${c}\\b`));
});

test('finetune --help names the blocks --freeze counts for every architecture', () => {
  const r = cli(['finetune', '--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /cnn-small\s+block1, block2, block3/);
  assert.match(r.stdout, /resnet8\s+stem, stage1_block1, stage2_block1, stage3_block1/);
});

test('an unknown config key exits 2, suggests the nearest key and writes nothing', () => {
  const dir = path.join(tmpDir(), 'run');
  const r = cli(['pretrain', ...base, '--set', 'train.epoch=3', '--run-dir', dir]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown config key 'train\.epoch'.*Did you mean 'train\.epochs'/);
  assert.equal(fs.existsSync(dir), false);
});

test('a wrongly typed value exits 2 naming the key', () => {
  const dir = path.join(tmpDir(), 'run');
  const r = cli(['pretrain', ...base, '--set', 'train.epochs=many', '--run-dir', dir]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /train\.epochs/);
  assert.equal(fs.existsSync(dir), false);
});

test('an unknown level exits 2 with the valid levels', () => {
  const dir = path.join(tmpDir(), 'run');
  const r = cli(['pretrain', ...base, '--level', 'species', '--run-dir', dir]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown level 'species'/);
  assert.match(r.stderr, /leaf, top, coarse, superclass, basic, subclass, depth:1\.\.3/);
  assert.equal(fs.existsSync(dir), false);
});

test('a missing config file exits 2', () => {
  const r = cli(['pretrain', '--config', '/nonexistent/x.yaml']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /cannot read config file '\/nonexistent\/x\.yaml'/);
});

test('--backend tensorflow without the binding exits 2 and says what to install', () => {
  const r = cli(['doctor', '--backend', 'tensorflow']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /npm install @tensorflow\/tfjs-node/);
});

test('doctor reports the backend and a working conv training step', () => {
  const r = cli(['doctor']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`backend:\\s+${AUTO_BACKEND} \\(auto\\)`));
  assert.match(r.stdout, /training step: ok/);
});

test('hierarchy --json lists every level with its classes and images per class', () => {
  const r = cli(['hierarchy', '--config', QUICKSTART, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const h = JSON.parse(r.stdout);
  assert.deepEqual(h.levels.map((l: { name: string; classes: number }) => [l.name, l.classes]), [['superclass', 2], ['basic', 6], ['subclass', 24]]);
  // 2000 samples dealt round-robin over 24 classes (83 or 84 each), 10 % held out for
  // validation (stratified): 74-76 per class are trained on, which is what it counts.
  const leaf = h.levels[2];
  assert.ok(leaf.images_min >= 74 && leaf.images_max <= 76, JSON.stringify(leaf));
  assert.equal(h.train_images, 2000);
  assert.equal(h.train_images_trained, 1800);
});

test('pretrain then finetune: the run folders hold every contract file and sensible values', () => {
  const root = tmpDir();
  const pre = path.join(root, 'pre');
  let r = cli(['pretrain', ...base, '--level', 'leaf', '--run-dir', pre]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^completed /m);
  for (const f of ['config.yaml', 'command.txt', 'hierarchy.json', 'split.json', 'env.json', 'metrics.jsonl', 'summary.json', 'run.json', 'model/model.json', 'model/weights.bin', 'checkpoint/state.json']) {
    assert.ok(fs.existsSync(path.join(pre, f)), `missing ${f}`);
  }
  assert.deepEqual(fs.readdirSync(pre).filter((f) => f.startsWith('run.lock')), [], 'run.lock (and run.lock.d, run.lock.info) must be gone after the run');
  const s = readJson(path.join(pre, 'summary.json'));
  assert.equal(s.status, 'completed');
  assert.equal(s.stage, 'pretrain');
  assert.equal(s.level, 'leaf');
  assert.equal(s.pretrain_level, 'leaf');
  assert.equal(s.frozen_blocks, 0);
  for (const k of ['test_acc', 'test_acc@superclass', 'test_acc@basic', 'test_top5', 'test_acc_easy', 'test_acc_hard', 'align_fine', 'align_random', 'align_fine_init', 'wall_seconds', 'train_images_per_second', 'skipped_images']) {
    assert.equal(typeof s[k], 'number', `summary.${k}`);
  }
  const env = readJson(path.join(pre, 'env.json'));
  assert.equal(env.backend, AUTO_BACKEND);
  assert.ok(Number(env.threads) >= 1, `threads ${env.threads}`);
  const rows = metricRows(pre);
  assert.deepEqual(rows.filter((x) => x.kind === 'epoch').map((x) => x.epoch), [0, 1, 2]);
  assert.ok(rows.every((x) => ['epoch', 'dynamics'].includes(String(x.kind)) && typeof x.trainable_params === 'number'));
  // Every epoch row carries train_loss, train_acc and val_acc (DESIGN.md): null at epoch 0, before any training.
  for (const row of rows.filter((x) => x.kind === 'epoch')) for (const k of ['train_loss', 'train_acc', 'val_acc']) assert.ok(k in row, `epoch ${row.epoch} row lacks ${k}`);
  const row0 = rows.find((x) => x.kind === 'epoch' && x.epoch === 0)!;
  assert.equal(row0.train_loss, null);
  assert.equal(row0.train_acc, null);
  const split = readJson<{ train: string[]; val: string[]; test: string[]; hash: string }>(path.join(pre, 'split.json'));
  assert.equal(split.train.length + split.val.length, 240);
  assert.equal(new Set([...split.train, ...split.val]).size, 240, 'train and val are disjoint');
  assert.match(fs.readFileSync(path.join(pre, 'command.txt'), 'utf8'), /^granular pretrain --config .* --level leaf/);

  const ft = path.join(root, 'ft');
  r = cli(['finetune', '--from', pre, '--level', 'top', '--freeze', 'all', '--set', 'train.epochs=2', '--quiet', '--run-dir', ft]);
  assert.equal(r.code, 0, r.stderr);
  const f = readJson(path.join(ft, 'summary.json'));
  assert.equal(f.status, 'completed');
  assert.equal(f.stage, 'finetune');
  assert.equal(f.level, 'superclass');
  assert.equal(f.pretrain_level, 'leaf');
  assert.equal(f.frozen_blocks, 1);
  assert.equal(f.from, '../pre');
  assert.equal(f.from_run_id, s.run_id);
  // The source's split is reused: fine-tuning sees the same images.
  assert.equal(readJson(path.join(ft, 'split.json')).hash, split.hash);
  // Linear probe: only the head (64 filters x 2 classes + 2 biases) trains.
  assert.equal(metricRows(ft).filter((x) => x.kind === 'epoch')[1].trainable_params, 64 * 2 + 2);
  const fenv = readJson<{ blocks: Array<{ name: string; frozen: boolean }> }>(path.join(ft, 'env.json'));
  assert.deepEqual(fenv.blocks.map((b) => [b.name, b.frozen]), [['features', true]]);
  // A run that is not finished cannot be fine-tuned from; a finished one can't be resumed.
  r = cli(['pretrain', '--resume', pre]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /already completed/);
});

test('the saved model loads with tf.loadLayersModel and reproduces the run\'s test accuracy', async () => {
  const dir = path.join(tmpDir(), 'run');
  const r = cli(['pretrain', ...base, '--run-dir', dir]);
  assert.equal(r.code, 0, r.stderr);
  const json = readJson<{ modelTopology: object; weightsManifest: Array<{ weights: tf.io.WeightsManifestEntry[] }> }>(path.join(dir, 'model', 'model.json'));
  const weights = fs.readFileSync(path.join(dir, 'model', 'weights.bin'));
  const model = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: json.weightsManifest[0].weights, weightData: new Uint8Array(weights).buffer }));
  // The saved graph (a strided Conv2D) must compute what training computed (patch matMul).
  const cfg = parseConfigYaml(fs.readFileSync(path.join(dir, 'config.yaml'), 'utf8'), 'config.yaml');
  const ds = await loadDataset(cfg);
  const split = makeSplit(ds, cfg);
  const x = tf.tensor4d(gatherFloats(ds.test.x, split.test), [split.test.length, 32, 32, 1]);
  const pred = (model.predict(x) as tf.Tensor).argMax(1).dataSync();
  const acc = split.test.filter((i, k) => pred[k] === ds.test.y[i]).length / split.test.length;
  assert.equal(acc, readJson(path.join(dir, 'summary.json')).test_acc);
  model.dispose();
  x.dispose();
});

test('finetune refuses bad sources and settings with exit 2 and no folder', () => {
  const root = tmpDir();
  const pre = path.join(root, 'pre');
  assert.equal(cli(['pretrain', ...base, '--run-dir', pre]).code, 0);
  const cases: Array<[string[], RegExp]> = [
    [['--from', root], /is not a run folder/],
    [['--from', pre, '--set', 'model.width=2'], /model\.width is locked by the pretrained run/],
    [['--from', pre, '--freeze', '2'], /--freeze 2 is more than the 1 block\(s\) of two-layer-conv \(features\).*Use 0\.\.1, or 'all'/],
    [['--from', pre, '--freeze', 'half'], /--freeze 'half' must be a number of blocks/],
    [['--from', pre, '--set', 'finetune.head=keep', '--level', 'top'], /finetune\.head=keep needs the target level to have as many classes/],
  ];
  for (const [args, msg] of cases) {
    const dir = path.join(root, 'ft');
    const r = cli(['finetune', ...args, '--quiet', '--run-dir', dir]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg);
    assert.equal(fs.existsSync(dir), false, `${args.join(' ')} left a folder`);
  }
  // An unfinished run (no summary.json) is not a source.
  fs.rmSync(path.join(pre, 'summary.json'));
  const r = cli(['finetune', '--from', pre, '--run-dir', path.join(root, 'ft')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /is not a finished run.*--resume/);
});

test('an existing non-empty --run-dir is refused with exit 2', () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'keep.txt'), 'mine');
  const r = cli(['pretrain', ...base, '--run-dir', dir]);
  assert.equal(r.code, 2);
  // Not a run folder: --resume cannot help, so it is not suggested.
  assert.match(r.stderr, /already exists, is not empty and is not a run folder\. Choose another --run-dir/);
  assert.doesNotMatch(r.stderr, /--resume/);
  assert.deepEqual(fs.readdirSync(dir), ['keep.txt']);
});

test('a diverging loss fails the run: exit 1, status failed, the error in summary.json', () => {
  const dir = path.join(tmpDir(), 'run');
  const r = cli(['pretrain', ...base, '--set', 'train.lr=1e30', '--set', 'train.schedule=constant', '--run-dir', dir]);
  assert.equal(r.code, 1, r.stderr);
  const s = readJson(path.join(dir, 'summary.json'));
  assert.equal(s.status, 'failed');
  assert.match(String(s.error), /training loss became (NaN|Infinity)/);
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('run.lock')), [], 'a failed run releases its lock');
});

test('without --run-dir a run goes to runs/<stage>-<name>-<time> under the working folder', () => {
  const cwd = tmpDir();
  const r = cli(['pretrain', ...base, '--level', 'depth:2'], { cwd });
  assert.equal(r.code, 0, r.stderr);
  const runs = fs.readdirSync(path.join(cwd, 'runs'));
  assert.equal(runs.length, 1);
  assert.match(runs[0], /^pretrain-quickstart-\d{8}-\d{6}$/);
  assert.equal(readJson(path.join(cwd, 'runs', runs[0], 'summary.json')).level, 'basic');
});

test('eval re-evaluates a finished run into eval/<time>/ and changes nothing else', () => {
  const dir = path.join(tmpDir(), 'run');
  assert.equal(cli(['pretrain', ...base, '--run-dir', dir]).code, 0);
  const snapshot = () => Object.fromEntries(fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => !f.startsWith('eval') && fs.statSync(path.join(dir, f)).isFile()).map((f) => [f, fs.readFileSync(path.join(dir, f)).toString('base64')]));
  const before = snapshot();
  const r = cli(['eval', dir, '--set', 'eval.ood_synthetic=[more_noise]', '--set', 'eval.ood_severities=[1,5]']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(snapshot(), before);
  const [stamp] = fs.readdirSync(path.join(dir, 'eval'));
  const e = readJson(path.join(dir, 'eval', stamp, 'summary.json'));
  assert.equal(e.test_acc, readJson(path.join(dir, 'summary.json')).test_acc);
  assert.ok(Number(e['ood_acc@more_noise:5']) <= Number(e['ood_acc@more_noise:1']) + 0.05);
  const bad = cli(['eval', dir, '--set', 'train.lr=1']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /only takes eval\.\* overrides/);
});

test('finetune --from: the source config is the base; --config, --set and flags override it in that order', () => {
  const root = tmpDir();
  const pre = path.join(root, 'pre');
  assert.equal(cli(['pretrain', ...base, '--set', 'train.lr=0.3', '--set', 'train.momentum=0.5', '--set', 'train.batch_size=32', '--run-dir', pre]).code, 0);
  const file = path.join(root, 'ft.yaml');
  fs.writeFileSync(file, 'train:\n  momentum: 0.8\n  batch_size: 16\n  level: basic\n');
  const ft = path.join(root, 'ft');
  const r = cli(['finetune', '--from', pre, '--config', file, '--set', 'train.batch_size=8', '--set', 'train.epochs=1', '--level', 'top', '--quiet', '--run-dir', ft]);
  assert.equal(r.code, 0, r.stderr);
  const cfg = parseConfigYaml(fs.readFileSync(path.join(ft, 'config.yaml'), 'utf8'), 'config.yaml');
  assert.equal(cfg.train.lr, 0.3, 'inherited from the source run');
  assert.equal(cfg.train.momentum, 0.8, '--config beats the source');
  assert.equal(cfg.train.batch_size, 8, '--set beats --config');
  assert.equal(cfg.train.level, 'top', '--level beats --config');
  assert.equal(cfg.model.arch, 'two-layer-conv');
  // Without --from the same command trains from scratch: pretrain_level scratch.
  const scratch = path.join(root, 'scratch');
  assert.equal(cli(['finetune', ...base, '--set', 'train.epochs=1', '--level', 'top', '--run-dir', scratch]).code, 0);
  assert.equal(readJson(path.join(scratch, 'summary.json')).pretrain_level, 'scratch');
});
