import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { parseSets, resolveConfig } from '../src/config/load';
import { syntheticHierarchy } from '../src/data/formats/synthetic';
import { buildNetwork } from '../src/models/archs';
import { batchNormModes, parseFreeze, planFinetune } from '../src/train/finetune';
import { UsageError } from '../src/util/errors';
import { shellQuote, shellSplit } from '../src/util/shell';

const SHAPE: [number, number, number] = [16, 16, 1];

function planFor(stage: 'pretrain' | 'finetune', ...sets: string[]) {
  const cfg = resolveConfig([parseSets(['model.arch=cnn-small', 'model.width=0.25', 'data.image_size=16', ...sets])]);
  const level = syntheticHierarchy([2, 2]).resolveLevel('top');
  const net = buildNetwork(cfg, SHAPE, level.classes.length);
  try {
    return { plan: planFinetune(cfg, stage, net, null, SHAPE, null), blocks: net.blocks.length };
  } finally {
    net.dispose();
  }
}

test('the fine-tuning plan: pretraining trains every block plainly; finetune.* keys decide the rest', async () => {
  await tf.ready();
  const pre = planFor('pretrain', 'finetune.freeze=2', 'finetune.lr_per_block_decay=0.5', 'finetune.batchnorm=frozen');
  assert.deepEqual(pre.plan, { frozenBlocks: 0, unfreeze: null, lrScale: [1, 1, 1], batchnormTrains: true, prefixCache: false }, 'finetune.* does not reach a pretraining run');
  const ft = planFor('finetune', 'finetune.freeze=2', 'finetune.lr_per_block_decay=0.5', 'finetune.batchnorm=frozen');
  assert.equal(ft.plan.frozenBlocks, 2);
  assert.deepEqual(ft.plan.lrScale, [0.125, 0.25, 0.5], 'decay^(distance from the head)');
  assert.equal(ft.plan.prefixCache, process.env.GRANULAR_PREFIX_CACHE !== '0');
  assert.deepEqual(batchNormModes(ft.plan, [false, false, true]), [false, false, false], 'batchnorm=frozen keeps every block in inference mode');
  assert.deepEqual(batchNormModes(planFor('finetune').plan, [false, true, true]), [false, true, true]);
  assert.equal(planFor('finetune', 'finetune.freeze=all').plan.frozenBlocks, 3);
  assert.equal(planFor('finetune', 'finetune.freeze=1', 'data.augment=[flip]').plan.prefixCache, false, 'augmented inputs cannot be cached');
  assert.equal(planFor('finetune', 'finetune.freeze=1', 'finetune.unfreeze={every: 1}').plan.prefixCache, false, 'blocks that may open cannot be cached');
  assert.throws(() => planFor('finetune', 'finetune.freeze=4'), (e: Error) => e instanceof UsageError && /--freeze 4 is more than the 3 block\(s\) of cnn-small/.test(e.message));
  assert.throws(() => planFor('pretrain', 'finetune.unfreeze={every: 1}'), (e: Error) => e instanceof UsageError && /finetune\.unfreeze is a fine-tuning schedule/.test(e.message));
  assert.equal(parseFreeze(' all '), 'all');
  assert.equal(parseFreeze('3'), 3);
  for (const bad of ['-1', 'half', '1.5', '']) assert.throws(() => parseFreeze(bad), UsageError, bad);
});

test('command lines: shell-quote quoting splits back to the same arguments, and plain ones stay unquoted', () => {
  const args = ['granular', 'finetune', '--set', 'data.synthetic.branching=[2,3,4]', '--set', 'name="a b"', "it's", '$HOME', 'a*b', '#x', '', 'x;y', 'runs/s/pretrain-level=coarse,seed=2'];
  const line = args.map(shellQuote).join(' ');
  assert.deepEqual(shellSplit(line), args);
  assert.equal(shellQuote('runs/s/pretrain-level=coarse,seed=2'), 'runs/s/pretrain-level=coarse,seed=2');
  assert.equal(shellQuote('train.level=depth:2'), 'train.level=depth:2');
  // command.txt written by earlier versions (single-quoted) still reads back.
  assert.deepEqual(shellSplit(`granular pretrain --set 'eval.ood=[contrast]' --set 'a'\\''b'`), ['granular', 'pretrain', '--set', 'eval.ood=[contrast]', '--set', "a'b"]);
});
