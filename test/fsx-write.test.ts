import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic, writeJsonAtomic } from '../src/util/fsx';
import { nearest } from '../src/util/errors';
import { tmpDir } from './helpers';

test('writeFileAtomic writes text and bytes (a view into a larger buffer: only its bytes), replaces a file, leaves no temp file', () => {
  const dir = tmpDir();
  const f = path.join(dir, 'a.txt');
  writeFileAtomic(f, 'first\n');
  writeFileAtomic(f, 'ünïcode\n');
  assert.equal(fs.readFileSync(f, 'utf8'), 'ünïcode\n');
  const whole = new Uint8Array([9, 9, 1, 2, 3, 9]);
  const b = path.join(dir, 'b.bin');
  writeFileAtomic(b, whole.subarray(2, 5));
  assert.deepEqual([...fs.readFileSync(b)], [1, 2, 3]);
  writeJsonAtomic(path.join(dir, 'c.json'), { x: 1 });
  assert.equal(fs.readFileSync(path.join(dir, 'c.json'), 'utf8'), '{\n  "x": 1\n}\n');
  assert.deepEqual(fs.readdirSync(dir).sort(), ['a.txt', 'b.bin', 'c.json']);
});

test('writeFileAtomic that cannot rename over the target throws and removes its temp file', () => {
  const dir = tmpDir();
  const target = path.join(dir, 'taken');
  fs.mkdirSync(path.join(target, 'inside'), { recursive: true });
  assert.throws(() => writeFileAtomic(target, 'x'), (e: NodeJS.ErrnoException) => typeof e.code === 'string');
  assert.deepEqual(fs.readdirSync(dir), ['taken'], 'no temp file left beside the target');
});

test('nearest suggests a key within a few edits (Levenshtein), by its last segment too, and nothing far', () => {
  const keys = ['train.epochs', 'train.lr', 'data.root', 'model.arch'];
  assert.equal(nearest('train.epoch', keys), 'train.epochs');
  assert.equal(nearest('epochs', keys), 'train.epochs');
  assert.equal(nearest('data.rot', keys), 'data.root');
  assert.equal(nearest('completely.different', keys), undefined);
});
