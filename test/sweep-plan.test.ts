import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fingerprint, planSweep, runArgs } from '../src/sweep/plan';
import { shellQuote, shellSplit } from '../src/util/shell';
import { jobVar, shellScript, slurmScript } from '../src/sweep/emit';
import { UsageError } from '../src/util/errors';

const DESIGN_EXAMPLE = {
  name: 'label-granularity',
  base: '../configs/quickstart.yaml',
  stages: {
    pretrain: { grid: { 'train.level': ['leaf', 'depth:2', 'coarse'], seed: [0, 1, 2] }, set: { 'train.epochs': 30 } },
    finetune: { from: 'pretrain', grid: { 'finetune.freeze': [0, 1, 2] }, set: { 'train.level': 'coarse' } },
  },
};

const names = (doc: unknown) => planSweep(doc).runs.map((r) => r.name);
const usage = (doc: unknown, re: RegExp) =>
  assert.throws(() => planSweep(doc, 'sweep file'), (e: unknown) => e instanceof UsageError && re.test((e as Error).message));

test('the DESIGN.md example is 9 pretraining runs and 27 fine-tuning runs', () => {
  const plan = planSweep(DESIGN_EXAMPLE);
  assert.equal(plan.name, 'label-granularity');
  assert.deepEqual(plan.stages.map((s) => [s.name, s.runs.length]), [['pretrain', 9], ['finetune', 27]]);
  assert.equal(plan.runs.length, 36);
  assert.equal(new Set(plan.runs.map((r) => r.name)).size, 36);
});

test('grid expansion is the cartesian product, first key slowest, names sanitised', () => {
  const plan = planSweep(DESIGN_EXAMPLE);
  assert.deepEqual(plan.runs.slice(0, 4).map((r) => r.name), [
    'pretrain-level=leaf,seed=0',
    'pretrain-level=leaf,seed=1',
    'pretrain-level=leaf,seed=2',
    'pretrain-level=depth2,seed=0',
  ]);
  const p = plan.runs[3];
  assert.deepEqual(p.params, [['train.level', 'depth:2'], ['seed', 0]]);
  // Stage set first, then the grid point; --set reads YAML, so depth:2 stays a plain string.
  assert.deepEqual(p.sets, ['train.epochs=30', 'train.level=depth:2', 'seed=0']);
  for (const r of plan.runs) assert.doesNotMatch(r.name, /[:/]/);
});

test('chained runs: one per source run x own grid, after their source, without the base config', () => {
  const plan = planSweep(DESIGN_EXAMPLE);
  const ft = plan.runs.filter((r) => r.stage === 'finetune');
  assert.deepEqual(ft.slice(0, 3).map((r) => [r.name, r.from]), [
    ['finetune-level=leaf,seed=0-freeze=0', 'pretrain-level=leaf,seed=0'],
    ['finetune-level=leaf,seed=0-freeze=1', 'pretrain-level=leaf,seed=0'],
    ['finetune-level=leaf,seed=0-freeze=2', 'pretrain-level=leaf,seed=0'],
  ]);
  // Dependency order: every source comes before the runs that start from it.
  const index = new Map(plan.runs.map((r, i) => [r.name, i]));
  for (const r of ft) assert.ok(index.get(r.from!)! < index.get(r.name)!);
  // Config inheritance along from: the command takes --from and only the stage's own
  // settings; the source's config (seed included) comes from its config.yaml.
  const args = runArgs(ft[1], { base: 'configs/quickstart.yaml', runsDir: 'runs/label-granularity' });
  assert.deepEqual(args, [
    'finetune', '--from', 'runs/label-granularity/pretrain-level=leaf,seed=0',
    '--set', 'train.level=coarse', '--set', 'finetune.freeze=1',
    '--run-dir', 'runs/label-granularity/finetune-level=leaf,seed=0-freeze=1',
  ]);
  assert.ok(!args.includes('--config'));
  assert.ok(!args.some((a) => a.startsWith('seed=')));
  // The effective settings carry the source's settings first, then the stage's.
  assert.deepEqual(ft[1].settings, [['train.epochs', 30], ['train.level', 'leaf'], ['seed', 0], ['train.level', 'coarse'], ['finetune.freeze', 1]]);
});

test('pretraining runs are shared, not repeated per fine-tuning grid point', () => {
  const plan = planSweep(DESIGN_EXAMPLE);
  assert.equal(plan.runs.filter((r) => r.command === 'pretrain').length, 9);
});

test('scratch: true adds one baseline per seed x grid point, with the base config and no --from', () => {
  const doc = structuredClone(DESIGN_EXAMPLE) as typeof DESIGN_EXAMPLE & { stages: { finetune: Record<string, unknown> } };
  doc.stages.finetune.scratch = true;
  const plan = planSweep(doc);
  const scratch = plan.runs.filter((r) => r.scratch);
  // train.level is overridden by the stage, so the three levels collapse: 3 seeds x 3 freeze values.
  assert.equal(scratch.length, 9);
  assert.equal(scratch[0].name, 'finetune-scratch-seed=0-freeze=0');
  assert.equal(scratch[0].from, null);
  const args = runArgs(scratch[0], { base: 'configs/q.yaml', runsDir: 'runs/x' });
  assert.deepEqual(args.slice(0, 3), ['finetune', '--config', 'configs/q.yaml']);
  assert.ok(!args.includes('--from'));
  // Exactly the fine-tuned twin's settings: the source's (last value wins), then the stage's.
  assert.deepEqual(scratch[0].sets, ['train.epochs=30', 'train.level=coarse', 'seed=0', 'finetune.freeze=0']);
});

test('explicit runs: besides a grid, nested or dotted keys, stage set overridable', () => {
  const plan = planSweep({
    name: 'x',
    stages: {
      pretrain: {
        grid: { seed: [0] },
        runs: [{ train: { level: 'top', epochs: 5 } }, { 'data.label_noise': 0.2 }],
        set: { 'train.epochs': 2 },
      },
    },
  });
  assert.deepEqual(plan.runs.map((r) => r.name), ['pretrain-seed=0', 'pretrain-level=top,epochs=5', 'pretrain-label_noise=0.2']);
  assert.deepEqual(plan.runs[1].sets, ['train.epochs=2', 'train.level=top', 'train.epochs=5']);
});

test('a stage with only set: is one run; stages are ordered by from:, not file order', () => {
  const plan = planSweep({ name: 'y', stages: { finetune: { from: 'pretrain', set: { 'train.level': 'top' } }, pretrain: { set: { 'train.epochs': 1 } } } });
  assert.deepEqual(plan.stages.map((s) => s.name), ['pretrain', 'finetune']);
  assert.deepEqual(plan.runs.map((r) => [r.name, r.from]), [['pretrain', null], ['finetune', 'pretrain']]);
});

test('custom stage names need command:, and chain further', () => {
  const plan = planSweep({
    name: 'z',
    stages: {
      pretrain: { grid: { seed: [0, 1] } },
      probe: { command: 'finetune', from: 'pretrain', set: { 'finetune.freeze': 'all' } },
      full: { command: 'finetune', from: 'probe', grid: { 'train.lr': [0.1] } },
    },
  });
  assert.deepEqual(plan.runs.map((r) => r.name), ['pretrain-seed=0', 'pretrain-seed=1', 'probe-seed=0', 'probe-seed=1', 'full-seed=0-lr=0.1', 'full-seed=1-lr=0.1']);
  assert.deepEqual(names({ name: 'z', stages: { pretrain: { grid: { seed: [0, 1] } } } }), ['pretrain-seed=0', 'pretrain-seed=1']);
  assert.equal(plan.runs.filter((r) => r.stage === 'full').length, 2);
  assert.equal(plan.runs.find((r) => r.stage === 'full')!.from, 'probe-seed=0');
});

test('bad sweep files are refused naming the entry (UsageError → exit 2)', () => {
  usage({ name: 'a', stages: { pretrain: { grid: { 'train.levle': ['leaf'] } } } }, /stages\.pretrain\.grid: unknown config key 'train\.levle'.*Did you mean 'train\.level'/);
  usage({ name: 'a', stages: { pretrain: { grid: {} } } }, /stages\.pretrain\.grid is empty/);
  usage({ name: 'a', stages: { pretrain: { grid: { seed: [] } } } }, /stages\.pretrain\.grid\.seed is an empty list/);
  usage({ name: 'a', stages: { pretrain: { grid: { seed: 3 } } } }, /grid\.seed must be a list/);
  usage({ name: 'a', stages: { pretrain: {}, finetune: { from: 'pretrian' } } }, /stages\.finetune\.from: there is no stage 'pretrian'.*Did you mean 'pretrain'/);
  usage({ name: 'a', stages: { pretrain: { from: 'x' } } }, /a pretrain stage cannot start from/);
  usage({ name: 'a', stages: { a: { command: 'finetune', from: 'b' }, b: { command: 'finetune', from: 'a' } } }, /form a cycle/);
  usage({ name: 'a', stages: { pretrain: { set: { 'train.epochs': 1 } }, finetune: { scratch: true } } }, /has no from:/);
  usage({ name: 'a', stages: { pretrain: { gird: { seed: [0] } } } }, /stages\.pretrain\.gird is not a stage setting.*Did you mean 'grid'/);
  usage({ name: 'a', stages: { train: { grid: { seed: [0] } } } }, /stage 'train' is not a command/);
  usage({ name: 'a', stages: { pretrain: { grid: { seed: [0] }, set: { seed: 1 } } } }, /'seed' is in both grid: and set:/);
  usage({ name: 'a', stages: { pretrain: { runs: [{}] } } }, /runs\[0\] must be a non-empty mapping/);
  usage({ name: 'a', stages: { pretrain: { runs: [{ 'model.widht': 2 }] } } }, /runs\[0\]: unknown config key 'model\.widht'.*'model\.width'/);
  usage({ stages: { pretrain: {} } }, /name: is required/);
  usage({ name: 'a' }, /stages: is required/);
  usage({ name: 'a', stages: { pretrain: {} }, stage: 1 }, /'stage' is not a sweep setting.*Did you mean 'stages'/);
  usage({ name: 'a', stages: { pretrain: { runs: [{ seed: 0 }, { seed: 0 }] } } }, /would both be 'pretrain-seed=0'/);
  usage({ name: 'a', stages: { pretrain: {}, finetune: { from: 'pretrain', grid: { 'model.width': [1, 2] } } } }, /stages\.finetune: 'model\.width' is locked by the pretrained runs/);
});

test('values round-trip through --set and command.txt quoting', () => {
  const plan = planSweep({ name: 'q', stages: { pretrain: { runs: [{ 'data.synthetic.branching': [2, 3, 4], name: 'a b', 'train.level': 'nodes:/tmp/x y.txt' }] } } });
  const r = plan.runs[0];
  assert.equal(r.name, 'pretrain-branching=2+3+4,name=a_b,level=nodestmpx_y.txt');
  assert.deepEqual(r.sets, ['data.synthetic.branching=[2,3,4]', 'name="a b"', 'train.level="nodes:/tmp/x y.txt"']);
  const args = ['granular', ...runArgs(r, { base: null, runsDir: 'runs/q' })];
  assert.deepEqual(shellSplit(args.map(shellQuote).join(' ')), args);
  assert.equal(fingerprint(args), fingerprint(shellSplit(args.map(shellQuote).join(' '))));
});

test('the Slurm script: one array per stage, sizes, and the afterok dependency', () => {
  const doc = structuredClone(DESIGN_EXAMPLE) as typeof DESIGN_EXAMPLE & { stages: { finetune: Record<string, unknown> } };
  doc.stages.finetune.scratch = true;
  const plan = planSweep(doc);
  const s = slurmScript(plan, { base: 'configs/quickstart.yaml', runsDir: 'runs/label-granularity', rootFromSweepDir: '../..' });
  assert.match(s, /^PRE_JOB=\$\(sbatch --parsable \$SBATCH_ARGS --array=0-8 --job-name=label-granularity-pretrain /m);
  assert.match(s, /^FT_JOB=\$\(sbatch --parsable \$SBATCH_ARGS --array=0-35 --dependency=afterok:\$PRE_JOB /m);
  assert.match(s, /^ {4}8\) run_one pretrain runs\/label-granularity\/pretrain-level=coarse,seed=2 pretrain --config configs\/quickstart\.yaml/m);
  assert.match(s, /--from runs\/label-granularity\/pretrain-level=leaf,seed=0 /);
  // Runs are referenced relatively; only the command that starts granular is absolute.
  assert.doesNotMatch(s.replace(/^GRANULAR=.*$/m, ''), /\/work\/|\/tmp\//, 'runs are referenced relatively');
  assert.match(s, /ROOT=\$\(cd "\$\(dirname "\$0"\)\/\.\.\/\.\." && pwd\)/);
  assert.equal(jobVar('probe-2'), 'PROBE_2_JOB');
  const sh = shellScript(plan, { base: 'configs/quickstart.yaml', runsDir: 'runs/label-granularity', rootFromSweepDir: '../..' });
  assert.equal(sh.split('\n').filter((l) => l.startsWith('run_one ')).length, 45);
});

test('from_run: a finetune stage fine-tunes every run from a run folder outside the sweep (--from PATH, with base:)', () => {
  const plan = planSweep({ name: 's', base: 'b.yaml', stages: { finetune: { from_run: 'old/pre', grid: { 'finetune.freeze': [0, 'all'] } } } }, 'sweep file', undefined, (p) => `mapped/${p}`);
  assert.deepEqual(plan.runs.map((r) => r.source), ['mapped/old/pre', 'mapped/old/pre']);
  assert.deepEqual(runArgs(plan.runs[1], { base: 'b.yaml', runsDir: 'runs/s' }), ['finetune', '--config', 'b.yaml', '--from', 'mapped/old/pre', '--set', 'finetune.freeze=all', '--run-dir', 'runs/s/finetune-freeze=all']);
  usage({ name: 's', stages: { pretrain: { from_run: 'x' } } }, /stages\.pretrain\.from_run: a pretrain stage cannot start from another run/);
  usage({ name: 's', stages: { pretrain: {}, finetune: { from: 'pretrain', from_run: 'x' } } }, /has both from: .* and from_run: .*keep one/);
  usage({ name: 's', stages: { finetune: { from_run: 'x', scratch: true } } }, /scratch: from-scratch baselines are made for from: stages/);
  usage({ name: 's', stages: { finetune: { from_run: 'x', set: { 'model.arch': 'resnet8' } } } }, /'model\.arch' is locked/);
});
