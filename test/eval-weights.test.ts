import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, QUICKSTART, readJson, tmpDir, TINY } from './helpers';

const base = ['--config', QUICKSTART, ...TINY, '--quiet'];

/** The one eval/<time>/summary.json under `run` made since `before` (the eval folders that existed). */
function newEval(run: string, before: string[]): Record<string, unknown> {
  const added = fs.readdirSync(path.join(run, 'eval')).filter((d) => !before.includes(d));
  assert.equal(added.length, 1, `one new eval folder, got ${added}`);
  return readJson(path.join(run, 'eval', added[0], 'summary.json'));
}
const evals = (run: string) => (fs.existsSync(path.join(run, 'eval')) ? fs.readdirSync(path.join(run, 'eval')) : []);

test('eval --weights best scores model-best/, --weights last (the default) model/, and the result says which', () => {
  const root = tmpDir();
  const a = path.join(root, 'a');
  const b = path.join(root, 'b');
  // Same data and split (data.seed), another network (train.seed); at `top` three epochs learn something.
  const learn = [...base, '--level', 'top', '--set', 'train.epochs=3'];
  assert.equal(cli(['pretrain', ...learn, '--run-dir', a]).code, 0);
  assert.equal(cli(['pretrain', ...learn, '--set', 'train.seed=7', '--run-dir', b]).code, 0);
  const sa = readJson(path.join(a, 'summary.json'));
  const sb = readJson(path.join(b, 'summary.json'));
  assert.ok(fs.existsSync(path.join(a, 'model-best')), 'a run with a validation set has model-best/');
  assert.notEqual(sa.test_acc, sb.test_acc, 'two seeds give two networks to tell apart');

  // Untouched run b: --weights best scores the network of its best epoch, as training measured it then.
  if (sb.best_epoch !== sb.epochs_trained) {
    const bb = cli(['eval', b, '--weights', 'best', '--json', '--quiet']);
    assert.equal(bb.code, 0, bb.stderr);
    assert.equal(JSON.parse(bb.stdout.trim().split('\n').pop()!).test_acc, sb.best_test_acc);
  }

  // model-best/ of run a replaced by run b's last network: only --weights best can score b's numbers.
  fs.rmSync(path.join(a, 'model-best'), { recursive: true });
  fs.cpSync(path.join(b, 'model'), path.join(a, 'model-best'), { recursive: true });

  let before = evals(a);
  const best = cli(['eval', a, '--weights', 'best', '--json', '--quiet']);
  assert.equal(best.code, 0, best.stderr);
  const eb = newEval(a, before);
  assert.equal(eb.test_acc, sb.test_acc, 'best scored model-best/');
  assert.equal(eb.weights, 'best');
  assert.equal(eb.weights_dir, 'model-best');
  assert.equal(eb.best_epoch, sa.best_epoch);
  const jb = JSON.parse(best.stdout.trim().split('\n').pop()!);
  assert.equal(jb.weights, 'best');

  before = evals(a);
  const last = cli(['eval', a, '--quiet']);
  assert.equal(last.code, 0, last.stderr);
  assert.match(last.stdout, /\(model\/\) test_acc=/);
  const el = newEval(a, before);
  assert.equal(el.test_acc, sa.test_acc, 'last (the default) scored model/');
  assert.equal(el.weights, 'last');
  assert.equal(el.weights_dir, 'model');
});

test('eval --weights best on a run without model-best/ exits 2 saying why; a bad --weights value exits 2', () => {
  const run = path.join(tmpDir(), 'noval');
  assert.equal(cli(['pretrain', ...base, '--set', 'data.val_fraction=0', '--run-dir', run]).code, 0);
  assert.equal(fs.existsSync(path.join(run, 'model-best')), false);
  const r = cli(['eval', run, '--weights', 'best', '--quiet']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /has no model-best\/: it was trained with data\.val_fraction=0, so it had no validation set/);
  assert.match(r.stderr, /--weights last/);
  assert.equal(fs.existsSync(path.join(run, 'eval')), false, 'a refused eval writes nothing');
  const bad = cli(['eval', run, '--weights', 'newest', '--quiet']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--weights.*newest.*(last|best)/s);
});
