import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, metricRows, QUICKSTART, readJson, slow, tmpDir } from './helpers';

/**
 * Issue 22, item 8: a run interrupted after early stopping (or convergence)
 * had decided to stop, and before it finished writing, trained one more epoch
 * when resumed. The decision is part of the checkpoint (carry.stopped_epoch,
 * carry.converged_epoch), so the resumed run ends as the uninterrupted one.
 * GRANULAR_FAULT_SIGNAL_AFTER_EPOCH (src/train/loop-parts.ts) sends the
 * signal right after the deciding epoch's checkpoint.
 */

/** cnn-small on 16x16 synthetic images, with dynamics rows (auto: after epochs 1, 2, 4, 8, ...). */
const CNN = [
  '--config', QUICKSTART, '--quiet',
  '--set', 'model.arch=cnn-small', '--set', 'model.width=0.25', '--set', 'data.image_size=16', '--set', 'data.synthetic.patch_size=4',
  '--set', 'data.synthetic.branching=[2,2,2]', '--set', 'data.synthetic.train_samples=160', '--set', 'data.synthetic.test_samples=48',
  '--set', 'train.batch_size=32', '--set', 'train.epochs=40',
];
const env = { GRANULAR_THREADS: '1' };

/** Timings differ between any two runs; everything else must not. */
const TIMING = /seconds|per_second|^started|^finished|^created|^wall|resumed/;
const untimed = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([k]) => !TIMING.test(k)));
const bytes = (dir: string, f: string) => fs.readFileSync(path.join(dir, f));

function compareRuns(whole: string, cut: string): void {
  assert.deepEqual(metricRows(cut).map(untimed), metricRows(whole).map(untimed), 'metrics.jsonl');
  const a = untimed(readJson(path.join(whole, 'summary.json')));
  const b = untimed(readJson(path.join(cut, 'summary.json')));
  delete a.run_id;
  delete b.run_id;
  assert.deepEqual(b, a, 'summary.json');
  for (const f of ['model/weights.bin', 'model/model.json', 'model-best/weights.bin']) assert.ok(bytes(whole, f).equals(bytes(cut, f)), `${f} differs`);
}

for (const [rule, sets, event] of [
  ['early stopping', ['--set', 'train.early_stop.patience=2', '--set', 'train.lr=0.2'], 'early_stop'],
  ['train.until_converged', ['--set', 'train.until_converged={patience: 2}', '--set', 'train.lr=0.05'], 'converged'],
] as const) {
  test(`a run stopped by SIGTERM right after ${rule} decided to stop resumes to the uninterrupted run's end, bit for bit`, slow, () => {
    const root = tmpDir();
    const whole = path.join(root, 'whole');
    let r = cli(['pretrain', ...CNN, ...sets, '--run-dir', whole], { env });
    assert.equal(r.code, 0, r.stderr);
    const stop = metricRows(whole).find((x) => x.kind === 'event' && x.event === event);
    assert.ok(stop, `${rule} fired`);
    const at = Number(stop.epoch);
    assert.ok(at < 40, `${rule} stopped at epoch ${at}`);

    const cut = path.join(root, 'cut');
    r = cli(['pretrain', ...CNN, ...sets, '--run-dir', cut], { env: { ...env, GRANULAR_FAULT_SIGNAL_AFTER_EPOCH: `${at}:SIGTERM` } });
    assert.equal(r.code, 143, `interrupted after the decision: ${r.stderr}`);
    assert.equal(readJson(path.join(cut, 'summary.json')).status, 'interrupted');
    assert.equal(readJson(path.join(cut, 'checkpoint', 'state.json')).epoch, at);

    r = cli(['pretrain', '--resume', cut, '--quiet'], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(metricRows(cut).filter((x) => x.kind === 'epoch').length, at + 1, 'no epoch trained after the decision');
    compareRuns(whole, cut);
  });
}
