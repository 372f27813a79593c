/**
 * Data pipeline benchmark: the same training run with batches prefetched on a
 * worker thread and made in place on the training thread (GRANULAR_PREFETCH=0),
 * side by side, with augmentation (flip + crop) so the batch work is not trivial.
 * Prints training img/s, the seconds the training thread spent waiting for or
 * making batches (batch_wait_seconds), and the ratio.
 * Run: npx tsc -p tsconfig.json && node dist/bench/pipeline.js [images]
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FILES } from '../src/runs/rundir';

const CLI = path.join(__dirname, '..', 'bin', 'granular.js');
const images = Number(process.argv[2] ?? 4000);
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'granular-bench-pipeline-'));
const sets = ['model.arch=cnn-small', 'model.width=0.5', 'data.image_size=32', 'data.channels=3', `data.synthetic.train_samples=${images}`, 'data.synthetic.test_samples=200', 'data.val_fraction=0', 'data.augment=[flip,crop]', 'train.epochs=2', 'train.lr=0.05', 'eval.dynamics_every=0'];

function run(prefetch: boolean): { ips: number; wait: number; loss: number } {
  const dir = path.join(root, prefetch ? 'prefetch' : 'inline');
  const r = spawnSync(process.execPath, [CLI, 'pretrain', ...sets.flatMap((s) => ['--set', s]), '--run-dir', dir, '--quiet'], {
    encoding: 'utf8',
    env: { ...process.env, GRANULAR_PREFETCH: prefetch ? '1' : '0' },
  });
  if (r.status !== 0) throw new Error(`run failed: ${r.stderr}`);
  const s = JSON.parse(fs.readFileSync(path.join(dir, FILES.summary), 'utf8'));
  return { ips: s.train_images_per_second, wait: s.batch_wait_seconds, loss: s.train_loss };
}

console.log(`cnn-small (width 0.5), 32x32x3, ${images} images x 2 epochs, batch 64, augment flip+crop\n`);
const inline = run(false);
const pre = run(true);
console.log('| batches | train img/s | batch_wait_seconds | final train_loss |');
console.log('|---|---|---|---|');
console.log(`| made in place | ${inline.ips.toFixed(0)} | ${inline.wait.toFixed(2)} | ${inline.loss} |`);
console.log(`| prefetched | ${pre.ips.toFixed(0)} | ${pre.wait.toFixed(2)} | ${pre.loss} |`);
console.log(`\nprefetched / in place: ${(pre.ips / inline.ips).toFixed(2)}x img/s; waiting ${(inline.wait / Math.max(pre.wait, 1e-9)).toFixed(1)}x less; same losses: ${pre.loss === inline.loss}`);
fs.rmSync(root, { recursive: true, force: true });
