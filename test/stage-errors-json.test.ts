import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, QUICKSTART, tmpDir } from './helpers';

test('--json: an exit-2 error still ends stdout with one JSON object naming it', () => {
  const r = cli(['pretrain', '--config', QUICKSTART, '--json', '--set', 'train.epochs=abc']);
  assert.equal(r.code, 2, r.stderr);
  const last = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(last.status, 'error');
  assert.equal(last.exit_code, 2);
  assert.match(last.error, /train\.epochs/);
});

test('train.early_stop without validation images is refused (exit 2, nothing written), not run silently to the end', () => {
  const dir = path.join(tmpDir(), 'r');
  const r = cli(['pretrain', '--config', QUICKSTART, '--set', 'train.early_stop.patience=2', '--set', 'data.val_fraction=0', '--set', 'train.epochs=1', '--run-dir', dir]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /train\.early_stop\.patience is 2 but this run holds out no validation images \(data\.val_fraction 0\)/);
  assert.equal(fs.existsSync(dir), false);
});
