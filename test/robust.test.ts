import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkpointState, cli, finalMetrics, metricRows, modelWeights, QUICKSTART, readJson, runWatching, same, slow, tmpDir } from './helpers';
import { Rng } from '../src/util/rng';

const base = ['--config', QUICKSTART, '--quiet'];
// 2,000 images per epoch at batch 32 with a checkpoint every 7 steps: kills land mid-epoch.
const LONG = [...base, '--set', 'train.epochs=8', '--set', 'train.batch_size=32', '--set', 'train.checkpoint_every_steps=7', '--set', 'data.synthetic.test_samples=200', '--set', 'eval.dynamics_every=20'];

function sameRun(a: string, b: string): void {
  assert.deepEqual(finalMetrics(b), finalMetrics(a));
  const wa = modelWeights(a);
  const wb = modelWeights(b);
  for (const [n, w] of wa) assert.ok(same(w, wb.get(n)!), `weight ${n} differs`);
  // Every row once, in the same order, with the same values but for timings.
  const strip = (rows: Array<Record<string, unknown>>) => rows.map((r) => Object.fromEntries(Object.entries(r).filter(([k]) => !/second|num_tensors/.test(k))));
  assert.deepEqual(strip(metricRows(b)), strip(metricRows(a)));
}

// Slow (many killed and resumed runs); CI runs it (GRANULAR_SLOW=1). A kill mid-epoch and a bit-identical
// resume stay in the default suite (test/data-records.test.ts, test/finetune.test.ts).
test('SIGKILL at random moments (mid-epoch, while checkpointing, while appending metrics): resume ends bit-identical', slow, async () => {
  const root = tmpDir();
  const whole = path.join(root, 'whole');
  assert.equal(cli(['pretrain', ...LONG, '--run-dir', whole]).code, 0);
  const rng = new Rng(Number(process.env.GRANULAR_FUZZ_SEED ?? 1));
  let killedMidRun = 0;
  for (let k = 0; k < 4; k++) {
    const dir = path.join(root, `cut${k}`);
    // Wait for some checkpoint, then a random extra delay, then kill.
    const minStep = 5 + rng.int(120);
    const extra = rng.int(40);
    let armed = 0;
    const r = await runWatching(['pretrain', ...LONG, '--run-dir', dir], (child) => {
      if (!armed && checkpointState(dir).step >= minStep) armed = Date.now();
      if (armed && Date.now() - armed >= extra) {
        child.kill('SIGKILL');
        return true;
      }
      return false;
    });
    if (r.signal !== 'SIGKILL') continue;
    killedMidRun++;
    // Tear the last metrics line as a write cut short would.
    if (k === 1) fs.appendFileSync(path.join(dir, 'metrics.jsonl'), '{"kind":"epoch","epo');
    const res = cli(['pretrain', '--resume', dir, '--quiet']);
    assert.equal(res.code, 0, res.stderr);
    if (k === 1) assert.match(res.stderr, /dropped a torn last line of metrics\.jsonl/);
    sameRun(whole, dir);
  }
  assert.ok(killedMidRun >= 2, `only ${killedMidRun} of 4 kills landed before the run finished`);
});

test('a crash between the two renames of a checkpoint swap is recovered from the folder left beside it', () => {
  const root = tmpDir();
  const whole = path.join(root, 'whole');
  const args = [...base, '--set', 'train.epochs=3', '--set', 'data.synthetic.train_samples=300', '--set', 'eval.dynamics_every=0'];
  assert.equal(cli(['pretrain', ...args, '--run-dir', whole]).code, 0);
  const dir = path.join(root, 'cut');
  assert.equal(cli(['pretrain', ...args, '--run-dir', dir]).code, 0);
  // Pretend the process died after moving the checkpoint aside and before moving the new one in.
  fs.rmSync(path.join(dir, 'summary.json'));
  fs.renameSync(path.join(dir, 'checkpoint'), path.join(dir, 'checkpoint.old-4242'));
  const r = cli(['pretrain', '--resume', dir, '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /resuming .* from epoch 3/);
  assert.equal(fs.existsSync(path.join(dir, 'checkpoint.old-4242')), false);
  assert.deepEqual(finalMetrics(dir), finalMetrics(whole));
});

test('--resume on another backend is refused unless --force; --resume may extend train.epochs', () => {
  const dir = path.join(tmpDir(), 'run');
  const args = [...base, '--set', 'train.epochs=2', '--set', 'data.synthetic.train_samples=300', '--set', 'eval.dynamics_every=0'];
  assert.equal(cli(['pretrain', ...args, '--run-dir', dir]).code, 0);
  fs.rmSync(path.join(dir, 'summary.json'));
  let r = cli(['pretrain', '--resume', dir, '--backend', 'cpu']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /was trained on (wasm|native) with \d+ thread\(s\); this process has cpu with 1.*--force/);
  r = cli(['pretrain', '--resume', dir, '--set', 'train.epochs=1']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /may extend train\.epochs \(2\), not shorten it/);
  r = cli(['pretrain', '--resume', dir, '--set', 'train.epochs=4', '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /extending .* from 2 to 4 epochs/);
  assert.deepEqual(metricRows(dir).filter((x) => x.kind === 'epoch').map((x) => x.epoch), [0, 1, 2, 3, 4]);
  assert.equal(readJson(path.join(dir, 'summary.json')).epochs, 4);
  fs.rmSync(path.join(dir, 'summary.json'));
  r = cli(['pretrain', '--resume', dir, '--backend', 'cpu', '--force', '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /warning: .* bit-identity with an uninterrupted run is not promised/);
});

test('a full disk stops the run with a clear message; after freeing space it resumes from an intact checkpoint', slow, async (t) => {
  const mnt = tmpDir('granular-tmpfs-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt], { stdio: 'ignore' });
  } catch {
    t.skip('cannot mount a small tmpfs here (needs root); the ENOSPC path is not exercised');
    return;
  }
  try {
    const dir = path.join(mnt, 'run');
    const filler = path.join(mnt, 'filler');
    const args = [...base, '--set', 'train.epochs=30', '--set', 'data.synthetic.test_samples=200', '--set', 'eval.dynamics_every=0', '--run-dir', dir];
    let filled = false;
    const r = await runWatching(['pretrain', ...args], () => {
      if (checkpointState(dir).epoch < 2) return false;
      // Take every free byte.
      const fd = fs.openSync(filler, 'w');
      const chunk = Buffer.alloc(64 * 1024);
      try {
        for (;;) fs.writeSync(fd, chunk);
      } catch {
        // ENOSPC: the disk is full now
      } finally {
        fs.closeSync(fd);
      }
      filled = true;
      return true;
    });
    assert.ok(filled);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr + r.stdout, /disk is full \(ENOSPC\)|could not write .*summary\.json.*ENOSPC/);
    const last = checkpointState(dir).epoch;
    assert.ok(last >= 2);
    fs.rmSync(filler);
    const res = cli(['pretrain', '--resume', dir, '--quiet']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stderr, new RegExp(`resuming .* from epoch ${last}`));
    assert.equal(readJson(path.join(dir, 'summary.json')).status, 'completed');
  } finally {
    execFileSync('umount', [mnt]);
  }
});

test('two processes on one run folder: the second is refused with the first one\'s PID', async () => {
  const dir = path.join(tmpDir(), 'run');
  let second: ReturnType<typeof cli> | null = null;
  let pid = 0;
  const r = await runWatching(['pretrain', ...LONG, '--run-dir', dir], (child) => {
    if (!fs.existsSync(path.join(dir, 'run.lock')) || checkpointState(dir).step < 1) return false;
    pid = child.pid!;
    second = cli(['pretrain', '--resume', dir]);
    child.kill('SIGTERM');
    return true;
  });
  assert.equal(r.code, 143, 'SIGTERM exits 143');
  assert.equal(readJson(path.join(dir, 'summary.json')).status, 'interrupted');
  assert.equal(second!.code, 2);
  assert.match(second!.stderr, new RegExp(`in use by process ${pid}`));
});
