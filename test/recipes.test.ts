import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { readConfigFile, resolveConfig } from '../src/config/load';
import { ARCHS } from '../src/models/archs';
import { FASHION_MNIST_SYSTEM, makeFashionMnist } from '../src/data/formats/fashion-mnist';
import { Rng } from '../src/util/rng';
import { runStage } from '../src/train/stage';
import { cli, readJson, ROOT, slow, tmpDir } from './helpers';

const RECIPES = path.join(ROOT, 'configs', 'recipes');

test('every recipe says when to use it and resolves against the schema', () => {
  const files = fs.readdirSync(RECIPES).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length >= 4, files.join(', '));
  for (const f of files) {
    const text = fs.readFileSync(path.join(RECIPES, f), 'utf8');
    assert.match(text, /^# Recipe: /, `${f}: starts with what it is`);
    assert.match(text, /\n# Use it /, `${f}: says when to use it`);
    const layer = readConfigFileOrSkip(path.join(RECIPES, f));
    if (layer === null) continue;
    const cfg = resolveConfig([layer]);
    assert.equal(cfg.name, f.replace('.yaml', ''));
  }
  const small = resolveConfig([readConfigFile(path.join(RECIPES, 'small-images.yaml'))]);
  assert.equal(small.model.arch, 'resnet8');
  assert.deepEqual(small.data.augment, ['crop', 'flip']);
  assert.equal(small.train.label_smoothing, 0.1);
  assert.equal(small.train.schedule, 'cosine');
});

/** large-images.yaml needs resnet18/50 and model.stem from the engine branch; until they are merged it is checked for being refused clearly. */
function readConfigFileOrSkip(file: string): Record<string, unknown> | null {
  if (!file.endsWith('large-images.yaml') || (ARCHS as string[]).includes('resnet18')) return readConfigFile(file);
  assert.throws(() => readConfigFile(file), /unknown config key 'model\.stem'/);
  return null;
}

/** 28 x 28 grayscale images of four textures (horizontal / vertical stripes, checks, a centred blob) with noise; textures 0-1 and 2-3 form two groups. */
async function writeTextures(root: string, perClass: [number, number]): Promise<void> {
  const rng = new Rng(5, 0);
  const value = (k: number, y: number, x: number) =>
    k === 0 ? (y % 6 < 3 ? 1 : 0) : k === 1 ? (x % 6 < 3 ? 1 : 0) : k === 2 ? ((Math.floor(x / 4) + Math.floor(y / 4)) % 2) : Math.hypot(x - 14, y - 14) < 8 ? 1 : 0;
  fs.mkdirSync(root, { recursive: true });
  fs.writeFileSync(path.join(root, 'taxonomy.csv'), 'group,texture\nlines,hstripes\nlines,vstripes\nareas,checks\nareas,blob\n');
  const names = ['hstripes', 'vstripes', 'checks', 'blob'];
  for (const [part, n] of [['train', perClass[0]], ['test', perClass[1]]] as const) {
    for (let k = 0; k < 4; k++) {
      const dir = path.join(root, part, names[k]);
      fs.mkdirSync(dir, { recursive: true });
      for (let i = 0; i < n; i++) {
        const px = Buffer.alloc(28 * 28);
        const dy = rng.int(4);
        const dx = rng.int(4);
        for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) px[y * 28 + x] = Math.max(0, Math.min(255, Math.round(255 * (0.2 + 0.6 * value(k, y + dy, x + dx)) + 40 * rng.normal())));
        await sharp(px, { raw: { width: 28, height: 28, channels: 1 } }).toColourspace('b-w').png().toFile(path.join(dir, `${i}.png`));
      }
    }
  }
}

// Slow (real training of three stages); CI runs it (GRANULAR_SLOW=1).
test('the small-image recipes train for real: pretraining learns its level, then a probe and a full fine-tune at the group level', slow, async () => {
  const root = tmpDir();
  const data = path.join(root, 'textures');
  await writeTextures(data, [16, 8]);
  const common = ['--set', 'data.format=imagefolder', '--set', `data.root=${data}`, '--set', `data.cache_dir=${path.join(root, 'cache')}`, '--set', 'eval.dynamics_every=0', '--quiet'];
  const pre = path.join(root, 'pre');
  let r = cli(['pretrain', '--config', path.join(RECIPES, 'small-images.yaml'), ...common, '--level', 'texture', '--set', 'train.epochs=6', '--set', 'train.batch_size=16', '--run-dir', pre]);
  assert.equal(r.code, 0, r.stderr);
  const s = readJson(path.join(pre, 'summary.json'));
  assert.ok(Number(s.test_acc) >= 0.9, `recipe pretraining test_acc ${s.test_acc} on four textures`);
  assert.equal(s.num_classes, 4);
  for (const recipe of ['small-images-probe.yaml', 'small-images-finetune.yaml']) {
    const dir = path.join(root, recipe);
    r = cli(['finetune', '--from', pre, '--config', path.join(RECIPES, recipe), ...common.slice(4), '--level', 'top', '--set', 'train.epochs=5', '--set', 'train.batch_size=16', '--run-dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    const f = readJson(path.join(dir, 'summary.json'));
    assert.equal(f.num_classes, 2);
    assert.ok(Number(f.test_acc) >= 0.9, `${recipe}: test_acc ${f.test_acc} on the two groups`);
    assert.equal(f.frozen_blocks, recipe.includes('probe') ? 4 : 0);
  }
});

/**
 * The recipe's claim on real data (EXPERIMENTS.md section 5): Fashion-MNIST items
 * at 120 training images per class are learned to >= 80 % test accuracy.
 * About 7 minutes on 2 cores.
 */
test('slow: the small-image recipe learns Fashion-MNIST items (120 per class) to >= 80 %', { ...slow, skip: (slow as { skip?: string }).skip ?? (fs.existsSync(FASHION_MNIST_SYSTEM) ? undefined : `${FASHION_MNIST_SYSTEM} not installed`) }, async () => {
  const root = tmpDir();
  const data = path.join(root, 'fm');
  await makeFashionMnist({ source: FASHION_MNIST_SYSTEM, out: data, trainPerClass: 140, testPerClass: 100, seed: 0 });
  const r = await runStage({
    stage: 'pretrain', configFile: path.join(RECIPES, 'small-images.yaml'), level: 'item', backend: 'auto', quiet: true, silent: true, argv: ['test'], runDir: path.join(root, 'pre'),
    sets: ['data.format=imagefolder', `data.root=${data}`, 'data.train_per_class=120', `data.cache_dir=${path.join(root, 'cache')}`],
  });
  assert.equal(r.exitCode, 0, String(r.summary.error));
  const s = r.summary;
  assert.ok(Number(s.test_acc) >= 0.8, `item-level test_acc ${s.test_acc}`);
});
