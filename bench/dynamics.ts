/**
 * What the training-dynamics measures cost: the same fine-tuning run with
 * dynamics rows off and at the default schedule, side by side, on the wasm
 * backend. Prints wall seconds and the overhead ratio per architecture.
 *   node dist/bench/dynamics.js
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FILES } from '../src/runs/rundir';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'bin', 'granular.js');
const QUICKSTART = path.join(ROOT, 'configs', 'quickstart.yaml');

function run(args: string[]): Record<string, unknown> {
  const r = spawnSync(process.execPath, [CLI, ...args, '--quiet'], { encoding: 'utf8', cwd: ROOT });
  if (r.status !== 0) throw new Error(`granular ${args.join(' ')} failed:\n${r.stderr}`);
  const dir = args[args.indexOf('--run-dir') + 1];
  return JSON.parse(fs.readFileSync(path.join(dir, FILES.summary), 'utf8'));
}

const cases: Array<{ name: string; sets: string[] }> = [
  { name: 'two-layer-conv (quickstart)', sets: [] },
  { name: 'cnn-small 32x32x1', sets: ['model.arch=cnn-small', 'model.width=0.5', 'train.lr=0.05', 'data.synthetic.train_samples=600'] },
  { name: 'resnet8 32x32x1', sets: ['model.arch=resnet8', 'model.width=0.5', 'train.lr=0.05', 'data.synthetic.train_samples=600'] },
];

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'granular-bench-dyn-'));
console.log('fine-tuning run (30 epochs, full fine-tuning), wall seconds: dynamics off vs eval.dynamics_every=auto (default)\n');
console.log('| network | off (s) | auto (s) | rows | overhead |');
console.log('| --- | ---: | ---: | ---: | ---: |');
for (const c of cases) {
  const sets = c.sets.flatMap((s) => ['--set', s]);
  const pre = path.join(root, `${c.name.split(' ')[0]}-pre`);
  run(['pretrain', '--config', QUICKSTART, ...sets, '--set', 'train.epochs=2', '--set', 'eval.dynamics_every=0', '--run-dir', pre]);
  const wall: number[] = [];
  let rows = 0;
  for (const every of ['0', 'auto']) {
    const dir = path.join(root, `${c.name.split(' ')[0]}-ft-${every}`);
    const s = run(['finetune', '--from', pre, '--level', 'top', '--set', 'train.epochs=30', '--set', `eval.dynamics_every=${every}`, '--run-dir', dir]);
    wall.push(Number(s.wall_seconds));
    if (every === 'auto') rows = fs.readFileSync(path.join(dir, FILES.metrics), 'utf8').split('\n').filter((l) => l.includes('"dynamics"')).length;
  }
  console.log(`| ${c.name} | ${wall[0].toFixed(1)} | ${wall[1].toFixed(1)} | ${rows} | ${((100 * (wall[1] - wall[0])) / wall[0]).toFixed(0)} % |`);
}
fs.rmSync(root, { recursive: true, force: true });
