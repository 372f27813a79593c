import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkpointState, cli, QUICKSTART, readJson, runUntil, tmpDir, TINY } from './helpers';

/** Numbers and options that said something slightly untrue. */

test('hierarchy takes --threads like every command, and counts images per class as a run trains on them', () => {
  const r = cli(['hierarchy', '--config', QUICKSTART, '--threads', '1', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const h = JSON.parse(r.stdout);
  // 2,000 generated (83 or 84 per subclass), 10 % held out for validation, stratified: 1,800 trained on, 74-76 per subclass.
  assert.equal(h.train_images, 2000);
  assert.equal(h.train_images_trained, 1800);
  assert.equal(h.val_images, 200);
  const leaf = h.levels.find((l: { name: string }) => l.name === 'subclass');
  assert.ok(leaf.images_min >= 74 && leaf.images_max <= 76 && leaf.images_max < 83, JSON.stringify(leaf));
  // The same split a run makes: a run's training set has as many images.
  const dir = path.join(tmpDir(), 'run');
  assert.equal(cli(['pretrain', '--config', QUICKSTART, '--set', 'train.epochs=0', '--quiet', '--run-dir', dir]).code, 0);
  assert.equal(readJson<{ train: string[] }>(path.join(dir, 'split.json')).train.length, h.train_images_trained);
  // A per-class cap is applied too (the 1,000-shown, 500-trained case).
  const capped = JSON.parse(cli(['hierarchy', '--config', QUICKSTART, '--set', 'data.train_per_class=50', '--json']).stdout);
  assert.equal(capped.levels.find((l: { name: string }) => l.name === 'subclass').images_max, 50);
  assert.equal(capped.levels.find((l: { name: string }) => l.name === 'superclass').images_max, 600);
  const text = cli(['hierarchy', '--config', QUICKSTART, '--set', 'data.train_per_class=50']);
  assert.match(text.stdout, /2,000 training images: 1,200 trained on, 200 held out for validation \(data\.val_fraction 0\.1\), capped by data\.train_per_class 50; 1,000 test images/);
  assert.equal(cli(['hierarchy', '--config', QUICKSTART, '--threads', 'two']).code, 2);
});

test('after --resume, wall_seconds counts the time of the process that was killed too', async () => {
  const dir = path.join(tmpDir(), 'run');
  const args = ['pretrain', '--config', QUICKSTART, ...TINY, '--set', 'train.epochs=4', '--quiet', '--run-dir', dir];
  const killed = await runUntil(args, dir, 2, 'SIGKILL');
  assert.equal(killed.signal, 'SIGKILL');
  const before = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint', 'state.json'), 'utf8')).carry.wall_seconds_done as number;
  assert.ok(before > 0, 'the checkpoint carries the time spent so far');
  assert.ok(checkpointState(dir).epoch >= 2);
  const t0 = Date.now();
  const r = cli(['pretrain', '--resume', dir, '--quiet']);
  const resumeSeconds = (Date.now() - t0) / 1000;
  assert.equal(r.code, 0, r.stderr);
  const s = readJson<{ wall_seconds: number; status: string }>(path.join(dir, 'summary.json'));
  assert.equal(s.status, 'completed');
  assert.ok(s.wall_seconds > before, `wall_seconds ${s.wall_seconds} includes the ${before} s before the kill`);
  assert.ok(s.wall_seconds < before + resumeSeconds + 1, 'and not more than both processes took');
  assert.equal(JSON.stringify(readJson(path.join(dir, 'summary.json'))).includes('wall_seconds_done'), false);
});
