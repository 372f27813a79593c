import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { runStage } from '../src/train/stage';
import { QUICKSTART, tmpDir } from './helpers';

/** Seed 0 in the default suite; all three seeds and their mean under GRANULAR_SLOW=1 (CI; ~4 min on the wasm kernels). */
const SEEDS = process.env.GRANULAR_SLOW === '1' ? [0, 1, 2] : [0];

/**
 * The claim `npm start` makes, checked by real training on the quickstart
 * settings (Hong et al. 2024): after pretraining on the finest labels, a linear
 * probe on the coarsest labels classifies *hard* test samples (only leaf
 * features) far better than after pretraining on the coarsest labels, on every
 * seed; and only fine pretraining aligns the filters with the leaf features.
 * Every seed is checked alike: the default suite checks seed 0 (each seed is
 * four full runs), GRANULAR_SLOW=1 all three and the mean gap.
 */
test(`fine pretraining beats coarse pretraining on hard samples under a linear probe (seeds ${SEEDS.join(', ')})`, async () => {
  const root = tmpDir();
  const common = { backend: 'wasm' as const, quiet: true, silent: true, argv: ['test'] };
  const gaps: number[] = [];
  for (const seed of SEEDS) {
    const pre: Record<string, Record<string, unknown>> = {};
    const probe: Record<string, Record<string, unknown>> = {};
    for (const level of ['leaf', 'top']) {
      const p = await runStage({ ...common, stage: 'pretrain', configFile: QUICKSTART, level, sets: [`seed=${seed}`], runDir: path.join(root, `s${seed}-${level}`) });
      assert.equal(p.exitCode, 0, String(p.summary.error));
      pre[level] = p.summary;
      const f = await runStage({ ...common, stage: 'finetune', from: p.runDir, level: 'top', freeze: 'all', sets: ['train.epochs=10', 'train.lr=0.5'], runDir: path.join(root, `s${seed}-${level}-probe`) });
      assert.equal(f.exitCode, 0, String(f.summary.error));
      probe[level] = f.summary;
    }
    const hard = (s: Record<string, unknown>) => Number(s.test_acc_hard);
    const gap = hard(probe.leaf) - hard(probe.top);
    gaps.push(gap);
    // DESIGN.md: fine pretraining won by 9-17 points on every seed. Since every new head is drawn from its own
    // stream (issue 15, item 0) the coarse probe no longer starts from the head its source started from:
    // seed 0 measures 9.8 points (75.6 vs 65.8), seeds 1 and 2 17.0 and 16.4.
    assert.ok(gap >= 0.08, `seed ${seed}: hard accuracy ${hard(probe.leaf)} after leaf vs ${hard(probe.top)} after coarse pretraining`);
    // Easy samples are solved either way: the difference is the rare features.
    assert.ok(Number(probe.leaf.test_acc_easy) > 0.97 && Number(probe.top.test_acc_easy) > 0.97);
    const leafAlign = Number(pre.leaf.align_fine) - Number(pre.leaf.align_random);
    const topAlign = Number(pre.top.align_fine) - Number(pre.top.align_random);
    assert.ok(leafAlign > 0.3, `seed ${seed}: align_fine ${pre.leaf.align_fine} vs random ${pre.leaf.align_random} after leaf pretraining`);
    assert.ok(Math.abs(topAlign) < 0.08, `seed ${seed}: align_fine ${pre.top.align_fine} vs random ${pre.top.align_random} after coarse pretraining`);
  }
  // The mean over the three seeds (seed 0 alone measures 9.8 points: the mean is a claim about all three).
  if (SEEDS.length === 3) {
    const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
    assert.ok(mean >= 0.12, `mean gap ${mean}`);
  }
});
