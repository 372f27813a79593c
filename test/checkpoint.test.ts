import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { buildNetwork } from '../src/models/archs';
import { resizePosEmbed } from '../src/models/checkpoint';
import { encodeSafetensors, readSafetensors } from '../src/models/safetensors';
import { loadRunWeights, readSourceRun } from '../src/runs/run';
import { cli, readJson, ROOT, slow, tmpDir } from './helpers';

// The default suite runs the vit-tiny round trip and the imported-ViT fine-tuning; the rest under GRANULAR_SLOW=1 (CI).
/** Debian's python3 with torch + torchvision (GRANULAR_PYTHON overrides); the tests that need it skip without it. */
const PYTHON = process.env.GRANULAR_PYTHON ?? '/usr/bin/python3';
const hasTorch = spawnSync(PYTHON, ['-c', 'import torch, torchvision'], { encoding: 'utf8' }).status === 0;
const torchSkip = hasTorch ? {} : { skip: `${PYTHON} cannot import torch and torchvision (install python3-torch python3-torchvision)` };
const REF = path.join(ROOT, 'test', 'torch', 'reference.py');

function py(args: string[]): void {
  const r = spawnSync(PYTHON, [REF, ...args], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, `reference.py ${args.join(' ')}: ${r.stderr}`);
}

const readF32 = (file: string) => {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

before(async () => {
  await tf.setBackend('cpu');
});

/** Logits of a run's network for NCHW float32 images. */
function runLogits(runDir: string, imagesFile: string, size: number): Float32Array {
  const run = readSourceRun(runDir);
  const x = tf.tensor(readF32(imagesFile), [2, 3, size, size]).transpose([0, 2, 3, 1]);
  const net = buildNetwork(run.cfg, [size, size, 3], Number(run.summary.num_classes));
  try {
    loadRunWeights(net, runDir);
    const y = net.forward(x, net.blocks.map(() => false));
    const out = y.dataSync() as Float32Array;
    y.dispose();
    return out;
  } finally {
    net.dispose();
    x.dispose();
  }
}

const maxDiff = (a: Float32Array, b: Float32Array) => {
  assert.equal(a.length, b.length);
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
};

test('safetensors: what is written reads back (F32 and I64), and broken files are refused with the reason', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'a.safetensors');
  fs.writeFileSync(file, encodeSafetensors([{ name: 'w', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, -6.5]) }, { name: 'n', shape: [], data: new BigInt64Array([7n]) }], { format: 'pt' }));
  const raw = fs.readFileSync(file);
  assert.equal(Number(raw.readBigUInt64LE(0)) % 8, 0, 'header padded to 8 bytes');
  const { tensors, metadata } = readSafetensors(file);
  assert.deepEqual([...(tensors.get('w')!.data as Float32Array)], [1, 2, 3, 4, 5, -6.5]);
  assert.deepEqual(tensors.get('w')!.shape, [2, 3]);
  assert.equal((tensors.get('n')!.data as BigInt64Array)[0], 7n);
  assert.deepEqual(metadata, { format: 'pt' });
  fs.writeFileSync(file, raw.subarray(0, raw.byteLength - 4));
  assert.throws(() => readSafetensors(file), /not a valid safetensors file: .*(outside|bytes)/);
  const huge = Buffer.alloc(16);
  huge.writeBigUInt64LE(1000n, 0);
  fs.writeFileSync(file, huge);
  assert.throws(() => readSafetensors(file), /header length 1000 runs past the end/);
});

test('position embeddings resampled to the same grid are unchanged, and the class token is kept', () => {
  const pos = Float32Array.from({ length: (1 + 9) * 2 }, (_, i) => Math.sin(i));
  assert.ok(maxDiff(resizePosEmbed(pos, 10, 2, 1, 3, 3), pos) < 1e-6);
  const up = resizePosEmbed(pos, 10, 2, 1, 5, 5);
  assert.equal(up.length, 26 * 2);
  assert.deepEqual([...up.subarray(0, 2)], [...pos.subarray(0, 2)]);
});

/** The round trip for one architecture: torch -> import -> granular logits; granular -> export -> torch logits. */
function roundTrip(arch: string, size: number): void {
  const dir = tmpDir();
  py(['make', arch, dir, String(size)]);
  const imp = path.join(dir, 'imported');
  const r = cli(['import', path.join(dir, 'model.safetensors'), '--arch', arch, '--out', imp]);
  assert.equal(r.code, 0, r.stderr);
  const s = readJson(path.join(imp, 'summary.json'));
  assert.equal(s.level, 'external: 10 classes');
  if (arch !== 'vit-tiny') assert.equal(readSourceRun(imp).cfg.model.padding, 'torch');
  // eval needs a data split, which an imported checkpoint has not: exit 2 saying what to do, nothing written.
  const ev = cli(['eval', imp, '--quiet']);
  assert.equal(ev.code, 2, ev.stderr);
  assert.match(ev.stderr, /imported checkpoint .*no data split.*finetune --from/);
  assert.ok(!fs.existsSync(path.join(imp, 'eval')), 'a refused eval writes nothing');
  const diff = maxDiff(runLogits(imp, path.join(dir, 'images.f32'), size), readF32(path.join(dir, 'logits.f32')));
  assert.ok(diff <= 1e-4, `${arch}: imported logits differ from PyTorch's by ${diff}`);
  const out = path.join(dir, 'exported.safetensors');
  const e = cli(['export', imp, '--format', 'safetensors', '--names', 'torchvision', '--out', out]);
  assert.equal(e.code, 0, e.stderr);
  py(['load', arch, out, String(size), path.join(dir, 'images.f32'), path.join(dir, 'logits-export.f32')]);
  const back = maxDiff(readF32(path.join(dir, 'logits-export.f32')), readF32(path.join(dir, 'logits.f32')));
  assert.ok(back <= 1e-5, `${arch}: exported then loaded in PyTorch, logits differ by ${back}`);
}

test('import/export round trip through PyTorch: resnet18 (32 px)', torchSkip, () => roundTrip('resnet18', 32));
// The ViT checks below are slow (runs plus PyTorch per test, 1-4 min on the wasm kernels); CI runs them (GRANULAR_SLOW=1).
// resnet18's round trip stays in the default suite.
test('import/export round trip through PyTorch: vit-tiny (torchvision VisionTransformer, 32 px, patch 8)', hasTorch ? slow : torchSkip, () => roundTrip('vit-tiny', 32));
test('a ViT imported at another image size resamples its position embeddings as F.interpolate(bicubic) does; timm names round-trip', hasTorch ? slow : torchSkip, () => {
  const dir = tmpDir();
  // vit-tiny's layout at width 0.125 (24 wide, 3 heads, MLP 96), patch 4: a 4x4 grid at 16 px, 6x6 at 24.
  const small = ['24', '3', '96', '4'];
  py(['make', 'vit-tiny', dir, '16', ...small]);
  py(['resize', dir, '24', ...small]);
  const imp = path.join(dir, 'imported24');
  const r = cli(['import', path.join(dir, 'model.safetensors'), '--arch', 'vit-tiny', '--image-size', '24', '--out', imp]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /position embeddings resampled 4x4 -> 6x6/);
  assert.deepEqual(readJson(path.join(imp, 'summary.json')).pos_embed_resized, { from: [4, 4], to: [6, 6] });
  const diff = maxDiff(runLogits(imp, path.join(dir, 'images2.f32'), 24), readF32(path.join(dir, 'logits2.f32')));
  assert.ok(diff <= 1e-4, `resampled: logits differ from PyTorch's by ${diff}`);
  // timm's names: exported, imported again (the style is read from the names), the same network.
  const timm = path.join(dir, 'timm.safetensors');
  assert.equal(cli(['export', imp, '--out', timm]).code, 0, 'a ViT exports with timm names by default');
  const names = [...readSafetensors(timm).tensors.keys()];
  for (const n of ['cls_token', 'pos_embed', 'patch_embed.proj.weight', 'blocks.11.attn.qkv.weight', 'blocks.0.mlp.fc2.bias', 'norm.weight', 'head.bias']) assert.ok(names.includes(n), n);
  const again = path.join(dir, 'again');
  const r2 = cli(['import', timm, '--arch', 'vit-tiny', '--out', again]);
  assert.equal(r2.code, 0, r2.stderr);
  assert.match(r2.stdout, /timm names/);
  assert.ok(maxDiff(runLogits(again, path.join(dir, 'images2.f32'), 24), readF32(path.join(dir, 'logits2.f32'))) <= 1e-4);
  // Another architecture's file is refused, naming what does not fit.
  const wrong = cli(['import', path.join(dir, 'model.safetensors'), '--arch', 'resnet18', '--out', path.join(dir, 'wrong')]);
  assert.equal(wrong.code, 2);
  assert.match(wrong.stderr, /has no tensor 'conv1.weight'.*Pass the matching --arch/);
  assert.ok(!fs.existsSync(path.join(dir, 'wrong')), 'nothing written');
});

test('an imported ViT fine-tunes with --freeze; the fine-tuned run exports to a torchvision VisionTransformer with the same logits', hasTorch ? slow : torchSkip, () => {
  const dir = tmpDir();
  // vit-tiny's layout at width 0.125: 24 wide, 3 heads, MLP 96, patch 4, 16 px.
  py(['make', 'vit-tiny', dir, '16', '24', '3', '96', '4']);
  const imp = path.join(dir, 'imported');
  assert.equal(cli(['import', path.join(dir, 'model.safetensors'), '--arch', 'vit-tiny', '--out', imp]).code, 0);
  assert.equal(readSourceRun(imp).cfg.model.width, 0.125);
  const ft = path.join(dir, 'ft');
  const data = ['--set', 'data.synthetic.branching=[2,2,2]', '--set', 'data.synthetic.train_samples=64', '--set', 'data.synthetic.test_samples=16', '--set', 'data.synthetic.patch_size=4', '--set', 'train.epochs=1', '--set', 'train.batch_size=32', '--set', 'eval.dynamics_every=0', '--set', 'train.optimizer=adam', '--set', 'train.lr=0.001'];
  const r = cli(['finetune', '--from', imp, '--level', 'top', '--freeze', '6', ...data, '--quiet', '--run-dir', ft]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /imported checkpoint: the images it was trained on are unknown/);
  const s = readJson(path.join(ft, 'summary.json'));
  assert.equal(s.pretrain_level, 'external: 10 classes');
  assert.equal(s.frozen_blocks, 6);
  const out = path.join(dir, 'ft.safetensors');
  const e = cli(['export', ft, '--names', 'torchvision', '--out', out]);
  assert.equal(e.code, 0, e.stderr);
  py(['load', 'vit-tiny', out, '16', path.join(dir, 'images.f32'), path.join(dir, 'ft-torch.f32'), '24', '3', '96', '4']);
  const diff = maxDiff(runLogits(ft, path.join(dir, 'images.f32'), 16), readF32(path.join(dir, 'ft-torch.f32')));
  assert.ok(diff <= 1e-4, `fine-tuned ViT: granular and PyTorch logits differ by ${diff}`);
  const refusal = cli(['finetune', '--from', imp, '--level', 'top', '--set', 'finetune.head=keep', ...data, '--quiet', '--run-dir', path.join(dir, 'keep')]);
  assert.equal(refusal.code, 2);
});

test('import/export round trip through PyTorch: resnet50 (64 px)', hasTorch ? slow : torchSkip, () => roundTrip('resnet50', 64));
test('import/export round trip through PyTorch: densenet121 (64 px)', hasTorch ? slow : torchSkip, () => roundTrip('densenet121', 64));
