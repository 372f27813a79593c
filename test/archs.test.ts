import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { resolveConfig } from '../src/config/load';
import { buildNetwork } from '../src/models/archs';
import { blockLrScale } from '../src/train/finetune';
import { TrainableSet } from '../src/train/trainable';
import { cli, modelWeights, QUICKSTART, readJson, same, slow, tmpDir } from './helpers';

before(async () => {
  await tf.setBackend('cpu');
});

const count = (arch: string, extra: Record<string, unknown> = {}, size = 224) => {
  const cfg = resolveConfig([{ seed: 0, model: { arch, ...extra }, data: { image_size: size, channels: 3 } }]);
  const net = buildNetwork(cfg, [size, size, 3], 1000);
  try {
    return { params: net.paramCount(net.blocks.map(() => true)), blocks: net.blocks.map((b) => b.name), net: net.layersModel() };
  } finally {
    net.dispose();
  }
};

test("vit-tiny, vit-small and densenet121 have timm's and torchvision's parameter counts and blocks", () => {
  // timm vit_tiny_patch16_224 / vit_small_patch16_224; torchvision densenet121 (1000 classes).
  const tiny = count('vit-tiny');
  assert.equal(tiny.params, 5_717_416);
  assert.deepEqual(tiny.blocks, ['patch_embed', ...Array.from({ length: 12 }, (_, i) => `block${i + 1}`)]);
  assert.equal(count('vit-small').params, 22_050_664);
  // Global average pooling (timm class_token=False, global_pool='avg'): no class token (192) and 196 position embeddings, not 197 (192).
  assert.equal(count('vit-tiny', { pool: 'avg' }).params, 5_717_416 - 2 * 192);
  // Patch 8 at 32 px: 16 patches + the class token.
  assert.equal(count('vit-tiny', { patch_size: 8 }, 32).params, 5_717_416 - (197 - 17) * 192 - 3 * 192 * (256 - 64));
  const dense = count('densenet121');
  assert.equal(dense.params, 7_978_856);
  assert.deepEqual(dense.blocks, ['stem', 'denseblock1', 'denseblock2', 'denseblock3', 'denseblock4']);
  assert.throws(() => count('vit-tiny', { patch_size: 16 }, 24), /model\.patch_size 16 must divide the image size 24x24.*--set model\.patch_size=8/);
  assert.throws(() => resolveConfig([{ model: { arch: 'resnet18', pool: 'avg' } }]), /model\.pool applies to vit-tiny, vit-small and vit-base only/);
  assert.throws(() => resolveConfig([{ model: { arch: 'cnn-small', patch_size: 4 } }]), /model\.patch_size applies to two-layer-conv and the ViTs only/);
});

test("vit-base has timm's parameter count (86,567,656)", slow, () => {
  assert.equal(count('vit-base').params, 86_567_656);
});

test('torch padding keeps resnet18/50 parameter counts and gives PyTorch output sizes', () => {
  assert.equal(count('resnet18', { padding: 'torch' }).params, 11_689_512);
  assert.equal(count('resnet50', { padding: 'torch' }).params, 25_557_032);
  // 225 px (odd): PyTorch's 7x7/2 pad 3 gives 113, its 3x3/2 pool pad 1 gives 57 ('same' would give 113 and 57 too, but differently placed).
  const m = count('resnet18', { padding: 'torch' }, 225).net;
  assert.deepEqual(m.getLayer('stem_pool').outputShape, [null, 57, 57, 64]);
});

test('layer-wise decay on a ViT reads blocks as BEiT/MAE: patch_embed decay^13, block i decay^(13-i), final norm and head 1', () => {
  const cfg = resolveConfig([{ seed: 0, model: { arch: 'vit-tiny', width: 0.125, patch_size: 4 }, data: { image_size: 16, channels: 3 } }]);
  const net = buildNetwork(cfg, [16, 16, 3], 4);
  try {
    const decay = 0.75;
    const set = new TrainableSet(net, net.blocks.map(() => true), blockLrScale(net.blocks.length, decay));
    const close = (a: number | undefined, b: number) => assert.ok(a !== undefined && Math.abs(a - b) < 1e-12, `${a} vs ${b}`);
    close(set.lrScaleOf('patch_embed_proj/kernel'), decay ** 13);
    close(set.lrScaleOf('embed/pos_embed'), decay ** 13);
    close(set.lrScaleOf('block1_attn/qkv_kernel'), decay ** 12);
    close(set.lrScaleOf('block12_mlp_fc2/kernel'), decay ** 1);
    close(set.lrScaleOf('norm/gamma'), 1);
    close(set.lrScaleOf('head/kernel'), 1);
  } finally {
    net.dispose();
  }
});

test('finetune --help lists the blocks of densenet121 and the ViTs', () => {
  const r = cli(['finetune', '--help']);
  assert.match(r.stdout, /densenet121\s+stem, denseblock1, denseblock2, denseblock3, denseblock4/);
  assert.match(r.stdout, /vit-tiny\s+patch_embed, block1, block2, .*block12\n/);
});

/** Tiny synthetic data for a tiny network. */
const DATA = ['--set', 'data.synthetic.branching=[2,2,2]', '--set', 'data.synthetic.train_samples=64', '--set', 'data.synthetic.test_samples=16', '--set', 'train.batch_size=32', '--set', 'eval.dynamics_every=0', '--set', 'train.epochs=1', '--quiet'];

for (const [arch, size, extra, freeze] of [
  ['vit-tiny', 16, ['--set', 'model.patch_size=4', '--set', 'train.optimizer=adam', '--set', 'train.lr=0.001'], 7],
  ['densenet121', 32, ['--set', 'train.lr=0.05'], 2],
] as const) {
  // Slow (a pretraining and a fine-tuning run each; 1-3 min on the wasm kernels); CI runs them (GRANULAR_SLOW=1).
  test(`${arch} pretrains, then fine-tunes with --freeze ${freeze}: frozen blocks stay bit-identical, the rest train`, slow, () => {
    const dir = tmpDir();
    const model = ['--set', `model.arch=${arch}`, '--set', 'model.width=0.125', '--set', `data.image_size=${size}`, '--set', 'data.synthetic.patch_size=4', ...extra];
    const pre = path.join(dir, 'pre');
    const r1 = cli(['pretrain', '--config', QUICKSTART, ...model, ...DATA, '--run-dir', pre]);
    assert.equal(r1.code, 0, r1.stderr);
    const ft = path.join(dir, 'ft');
    const r2 = cli(['finetune', '--from', pre, '--level', 'top', '--freeze', String(freeze), ...DATA, '--run-dir', ft]);
    assert.equal(r2.code, 0, r2.stderr);
    const s = readJson(path.join(ft, 'summary.json'));
    assert.equal(s.frozen_blocks, freeze);
    const env = readJson<{ blocks: Array<{ name: string; frozen: boolean; layers: string[] }> }>(path.join(ft, 'env.json'));
    const a = modelWeights(pre);
    const b = modelWeights(ft);
    let frozenChecked = 0;
    let trainedMoved = 0;
    for (const blk of env.blocks) {
      for (const [name, w] of b) {
        if (!blk.layers.includes(name.split('/')[0])) continue;
        if (blk.frozen) {
          assert.ok(same(w, a.get(name)!), `${name} of frozen ${blk.name} changed`);
          frozenChecked++;
        } else if (!same(w, a.get(name)!)) trainedMoved++;
      }
    }
    assert.ok(frozenChecked > 0 && trainedMoved > 0, `${frozenChecked} frozen weights checked, ${trainedMoved} trained weights moved`);
  });
}
