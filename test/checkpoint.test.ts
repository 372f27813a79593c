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
  const diff = maxDiff(runLogits(imp, path.join(dir, 'images.f32'), size), readF32(path.join(dir, 'logits.f32')));
  assert.ok(diff <= 1e-4, `${arch}: imported logits differ from PyTorch's by ${diff}`);
  const out = path.join(dir, 'exported.safetensors');
  const e = cli(['export', imp, '--format', 'safetensors', '--names', 'torchvision', '--out', out]);
  assert.equal(e.code, 0, e.stderr);
  py(['load', arch, out, String(size), path.join(dir, 'images.f32'), path.join(dir, 'logits-export.f32')]);
  const back = maxDiff(readF32(path.join(dir, 'logits-export.f32')), readF32(path.join(dir, 'logits.f32')));
  assert.ok(back <= 1e-5, `${arch}: exported then loaded in PyTorch, logits differ by ${back}`);
}

test('import/export round trip through PyTorch: resnet18 (64 px)', torchSkip, () => roundTrip('resnet18', 64));
test('import/export round trip through PyTorch: vit-tiny (torchvision VisionTransformer, 32 px, patch 8)', torchSkip, () => roundTrip('vit-tiny', 32));
test('import/export round trip through PyTorch: resnet50 (64 px)', hasTorch ? slow : torchSkip, () => roundTrip('resnet50', 64));
test('import/export round trip through PyTorch: densenet121 (64 px)', hasTorch ? slow : torchSkip, () => roundTrip('densenet121', 64));
