import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, metricRows, modelWeights, needsPty, QUICKSTART, readJson, same, tmpDir, TINY, tty } from './helpers';

/** What a researcher sees at a terminal while runs train, and what scripts read when they end. */

const base = ['--config', QUICKSTART, ...TINY];
/** cnn-small (3 blocks) on 16x16 synthetic images: small enough to train in seconds. */
const CNN = [
  '--set', 'model.arch=cnn-small', '--set', 'model.width=0.25', '--set', 'data.image_size=16', '--set', 'data.synthetic.patch_size=4',
  '--set', 'data.synthetic.branching=[2,2,2]', '--set', 'data.synthetic.train_samples=160', '--set', 'data.synthetic.test_samples=48',
  '--set', 'train.batch_size=32', '--set', 'train.lr=0.05', '--set', 'eval.dynamics_every=0',
];
const EPOCH_LINE = /^epoch (\d+)\/(\d+) train_loss \d\.\d{4} train_acc \d\.\d{3} val_acc \d\.\d{3}\*? test_acc \d\.\d{3} test_acc_hard \d\.\d{3} \d+ img\/s \d+\.\d s elapsed \d+:\d\d( ETA \d+:\d\d)?$/;

test('in a terminal: a progress bar while an epoch runs, then one line per epoch with val/test metrics, epoch time, elapsed and ETA', { ...needsPty }, () => {
  const dir = path.join(tmpDir(), 'run');
  const r = tty(['pretrain', ...base, '--set', 'train.epochs=3', '--run-dir', dir]);
  assert.equal(r.code, 0, r.screen);
  // The bar was drawn (cli-progress shades) and each epoch's bar was cleared.
  assert.match(r.raw, /epoch 1\/3 \[[\u2588\u2591]+\] \d+\/\d+ loss/);
  assert.doesNotMatch(r.screen, /[\u2588\u2591]/, 'no bar left on the screen');
  const lines = r.screen.split('\n').filter((l) => l.startsWith('epoch '));
  assert.equal(lines.length, 3, r.screen);
  lines.forEach((l, i) => {
    assert.match(l, EPOCH_LINE, l);
    assert.equal(Number(EPOCH_LINE.exec(l)![1]), i + 1);
  });
  assert.match(lines[0], / ETA \d+:\d\d$/);
  assert.doesNotMatch(lines[2], /ETA/, 'nothing left after the last epoch');
  // The printed numbers are the run's own.
  const rows = metricRows(dir).filter((x) => x.kind === 'epoch' && Number(x.epoch) > 0);
  rows.forEach((row, i) => {
    assert.match(lines[i], new RegExp(` val_acc ${Number(row.val_acc).toFixed(3)}\\*? test_acc ${Number(row.test_acc).toFixed(3)} `));
    assert.match(lines[i], new RegExp(` ${Number(row.epoch_seconds).toFixed(1)} s `));
  });
  // The start line: folder, level and why, data sizes, architecture, backend.
  assert.match(r.screen, /^granular: pretrain .*run\n {2}level leaf \('leaf'\), 24 classes, 216 training images, 24 validation, 120 test\n {2}two-layer-conv: features, head \([\d,]+ params\); backend \w+, \d+ thread\(s\)$/m);
  // Piped, the same epoch lines and no bar.
  const piped = cli(['pretrain', ...base, '--set', 'train.epochs=3', '--run-dir', path.join(tmpDir(), 'run')]);
  assert.equal(piped.code, 0);
  assert.doesNotMatch(piped.stderr, /[\u2588\u2591\r]/);
  assert.equal(piped.stderr.split('\n').filter((l) => EPOCH_LINE.test(l)).length, 3, piped.stderr);
});

test('gradual unfreezing events appear as they happen: epoch, block opened, trainable parameters', { ...needsPty }, () => {
  const root = tmpDir();
  const pre = path.join(root, 'pre');
  assert.equal(cli(['pretrain', '--config', QUICKSTART, ...CNN, '--set', 'train.epochs=1', '--quiet', '--run-dir', pre]).code, 0);
  const ft = path.join(root, 'ft');
  const r = tty(['finetune', '--from', pre, '--set', 'train.epochs=3', '--set', 'finetune.unfreeze={every: 1, order: top-down}', '--run-dir', ft]);
  assert.equal(r.code, 0, r.screen);
  const events = metricRows(ft).filter((x) => x.kind === 'event');
  // One block opens after each epoch's last step: block3, block2, then block1 (after the last step of all).
  assert.deepEqual(events.map((e) => e.block), ['block3', 'block2', 'block1']);
  const lines = r.screen.split('\n');
  for (const e of events) {
    const text = `epoch ${e.epoch}, step ${e.step}: ${e.block} opened, ${Number(e.trainable_params).toLocaleString('en-US')} trainable params (top-down)`;
    const at = lines.indexOf(text);
    assert.ok(at >= 0, `'${text}' on the screen:\n${r.screen}`);
    // It happened at the epoch's last step: printed then, right above the line that epoch leaves.
    assert.match(lines[at + 1], new RegExp(`^epoch ${e.epoch}/3 `));
  }
  assert.ok(Number(events[1].trainable_params) > Number(events[0].trainable_params));
  // The start line names the source, the level and why, frozen and trainable blocks with counts.
  assert.match(r.screen, new RegExp(`^granular: finetune ${ft.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} from ${pre.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\(pretrained at leaf, 8 classes\\)$`, 'm'));
  assert.match(r.screen, /^ {2}level superclass \('top', the coarsest: no --level given, and finetune does not inherit its source's level\), 2 classes, 144 training images, 16 validation, 48 test$/m);
  assert.match(r.screen, /^ {2}frozen: block1, block2, block3 \([\d,]+ params\); trainable: head \(\d+ params\); gradual unfreezing opens top-down every 1 epoch\(s\); backend/m);
});

test('finetune without --level trains at top and says so; --level or a config naming a level wins', () => {
  const root = tmpDir();
  const pre = path.join(root, 'pre');
  assert.equal(cli(['pretrain', ...base, '--level', 'leaf', '--quiet', '--run-dir', pre]).code, 0);
  const ft = path.join(root, 'ft');
  const r = cli(['finetune', '--from', pre, '--freeze', 'all', '--run-dir', ft]);
  assert.equal(r.code, 0, r.stderr);
  const s = readJson(path.join(ft, 'summary.json'));
  assert.equal(s.level, 'superclass');
  assert.equal(s.num_classes, 2);
  assert.match(fs.readFileSync(path.join(ft, 'config.yaml'), 'utf8'), /^ {2}level: top$/m);
  // Frozen: the whole two-layer network; trainable: the 2-way head (64 x 2 + 2).
  const frozenParams = [...modelWeights(pre)].filter(([k]) => !k.startsWith('head/')).reduce((a, [, w]) => a + w.length, 0);
  assert.match(r.stderr, new RegExp(`frozen: features \\(${frozenParams.toLocaleString('en-US')} params\\); trainable: head \\(130 params\\)`));
  assert.match(r.stderr, /from .*pre \(pretrained at leaf, 24 classes\)/);
  // An explicit level is kept, and said to be the one asked for.
  const leaf = cli(['finetune', '--from', pre, '--level', 'depth:2', '--freeze', 'all', '--run-dir', path.join(root, 'ft2')]);
  assert.equal(leaf.code, 0, leaf.stderr);
  assert.match(leaf.stderr, /level basic \('depth:2'\), 6 classes, /);
  const cfgFile = path.join(root, 'ft.yaml');
  fs.writeFileSync(cfgFile, 'train:\n  level: leaf\n  epochs: 1\n');
  const own = cli(['finetune', '--from', pre, '--config', cfgFile, '--quiet', '--run-dir', path.join(root, 'ft3')]);
  assert.equal(own.code, 0, own.stderr);
  assert.equal(readJson(path.join(root, 'ft3', 'summary.json')).level, 'leaf', 'its own --config names the level');
});

test('early stopping on val_acc: model/ is the last epoch, model-best/ the best, summary.json says which', () => {
  const dir = path.join(tmpDir(), 'run');
  const r = cli(['pretrain', '--config', QUICKSTART, ...CNN, '--set', 'train.epochs=40', '--set', 'train.early_stop.patience=2', '--set', 'train.lr=0.2', '--quiet', '--json', '--run-dir', dir]);
  assert.equal(r.code, 0, r.stderr);
  const s = readJson(path.join(dir, 'summary.json'));
  const rows = metricRows(dir).filter((x) => x.kind === 'epoch' && Number(x.epoch) > 0);
  assert.equal(s.early_stopped, true, `stopped after ${rows.length} epochs`);
  assert.equal(s.epochs_trained, rows.length);
  assert.ok(rows.length < 40);
  // The best epoch: the first with the highest val_acc; stopping came patience epochs later.
  const vals = rows.map((x) => Number(x.val_acc));
  const best = vals.indexOf(Math.max(...vals)) + 1;
  assert.equal(s.best_epoch, best);
  assert.equal(s.best_val_acc, vals[best - 1]);
  assert.equal(s.best_test_acc, rows[best - 1].test_acc);
  assert.equal(rows.length, best + 2);
  assert.match(r.stderr, new RegExp(`early stop after epoch ${rows.length}: val_acc has not improved on epoch ${best} .* for 2 epoch\\(s\\); model-best/ holds epoch ${best}`));
  assert.ok(metricRows(dir).some((x) => x.kind === 'event' && x.event === 'early_stop'));
  // The final values are those of the last epoch, OOD included; model-best/ differs from model/.
  assert.equal(s.test_acc, rows[rows.length - 1].test_acc);
  const last = modelWeights(dir);
  const bestW = modelWeights(dir, 'model-best');
  assert.deepEqual([...bestW.keys()], [...last.keys()]);
  assert.ok([...last].some(([k, w]) => !same(w, bestW.get(k)!)), 'model-best/ is another epoch than model/');
  // --json: the final stdout line is the summary with the folder.
  const line = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(line.status, 'completed');
  assert.equal(line.run_dir, dir);
  assert.equal(line.best_epoch, best);
  assert.equal(line.test_acc, s.test_acc);
});

test('summary.json keys are snake_case; env.json records the git commit and a dirty flag; a 0-epoch run reports its test_acc', () => {
  const dir = path.join(tmpDir(), 'run');
  assert.equal(cli(['pretrain', ...base, '--quiet', '--run-dir', dir]).code, 0);
  const s = readJson(path.join(dir, 'summary.json'));
  const camel = Object.keys(s).filter((k) => /^[a-z]+[A-Z]/.test(k));
  assert.deepEqual(camel, [], 'no camelCase keys');
  assert.equal(typeof s.dynamics_seconds, 'number');
  const env = readJson<{ git: { commit: string; dirty: boolean; root: string } | null }>(path.join(dir, 'env.json'));
  if (fs.existsSync(path.join(__dirname, '..', '..', '.git'))) {
    assert.match(env.git!.commit, /^[0-9a-f]{40}$/);
    assert.equal(typeof env.git!.dirty, 'boolean');
  }
  const zero = path.join(tmpDir(), 'zero');
  assert.equal(cli(['pretrain', ...base, '--set', 'train.epochs=0', '--quiet', '--run-dir', zero]).code, 0);
  const z = readJson(path.join(zero, 'summary.json'));
  const row0 = metricRows(zero).find((x) => x.kind === 'epoch')!;
  assert.equal(z.test_acc, row0.test_acc);
  assert.equal(typeof z.test_acc, 'number');
  assert.equal(z.epochs_trained, 0);
});
