import { PlannedRun, runArgs, SweepPlan } from './plan';
import { granularCommand, shellQuote } from '../util/shell';
import { FILES } from '../runs/rundir';

/**
 * Scripts that run a sweep without `granular sweep` driving it: a plain shell
 * script, or a Slurm submitter with one job array per stage. Both are written
 * into runs/<sweep>/ and refer to runs relatively, from the folder that holds
 * the runs folder, so the tree can move (or live on a shared filesystem).
 */

export interface EmitOptions {
  /** Path of the base config as seen from the tree root, or null. */
  base: string | null;
  /** Path of runs/<sweep> as seen from the tree root (e.g. `runs/label-granularity`). */
  runsDir: string;
  /** Path from runs/<sweep> back to the tree root (e.g. `../..`). */
  rootFromSweepDir: string;
}

const RUN_ONE = `# GRANULAR is shell text (a quoted path stays one word): eval splits it as a shell would.
run_granular() { eval "$GRANULAR" '"$@"'; }

# run_one STAGE DIR ARGS...: skip a completed run, resume a crashed or
# interrupted one, otherwise start it. Safe to run again after a partial sweep.
run_one() {
  stage=$1 dir=$2
  shift 2
  if [ -f "$dir/${FILES.summary}" ] && grep -Eq '"status": *"completed"' "$dir/${FILES.summary}"; then
    echo "skip $dir (completed)"
  elif [ -f "$dir/${FILES.config}" ]; then
    run_granular "$stage" --resume "$dir" --quiet
  else
    run_granular "$@" --quiet
  fi
}`;

function runLine(run: PlannedRun, o: EmitOptions): string {
  return `run_one ${run.command} ${shellQuote(`${o.runsDir}/${run.name}`)} ${runArgs(run, { base: o.base, runsDir: o.runsDir }).map(shellQuote).join(' ')}`;
}

function header(plan: SweepPlan, o: EmitOptions, what: string): string {
  return `#!/bin/sh
# ${what} for sweep '${plan.name}' (${plan.runs.length} runs), written by 'granular sweep --emit'.
# A POSIX sh script (sh, dash or bash run it).
# Runs live in ${o.runsDir}/ relative to the tree root (${o.rootFromSweepDir} from this script),
# and fine-tuning runs name their source relatively, so the whole tree can move.
# GRANULAR is the command that starts granular (default: the node and the checkout
# that wrote this script, by absolute path, so it runs from any folder and on a
# compute node sharing the filesystem); set it to use another, e.g. GRANULAR=granular.
set -eu
GRANULAR=\${GRANULAR:-${shellQuote(granularCommand())}}
`;
}

/**
 * The prefix of the commands \`sweep --dry-run\` prints: $GRANULAR when set
 * (e.g. \`GRANULAR=granular\` on a cluster with its own install), else the
 * command that starts this granular from any folder (util/shell.ts
 * granularCommand: \`granular\` when really installed, else node and this
 * checkout's absolute bin/granular.js).
 */
export function granularPrefix(): string {
  return process.env.GRANULAR?.trim() || granularCommand();
}

/** A shell script that runs every run in dependency order, one after another. */
export function shellScript(plan: SweepPlan, o: EmitOptions): string {
  const lines = [header(plan, o, 'Sequential script'), 'cd "$(dirname "$0")/' + o.rootFromSweepDir + '"', '', RUN_ONE, ''];
  for (const s of plan.stages) {
    lines.push(`# stage ${s.name} (${s.runs.length} runs)`);
    for (const name of s.runs) lines.push(runLine(plan.runs.find((r) => r.name === name)!, o));
    lines.push('');
  }
  return lines.join('\n');
}

/** Shell variable holding a stage's array job id: PRE_JOB for pretrain, FT_JOB for finetune. */
export function jobVar(stage: string): string {
  if (stage === 'pretrain') return 'PRE_JOB';
  if (stage === 'finetune') return 'FT_JOB';
  return `${stage.toUpperCase().replace(/[^A-Z0-9]+/g, '_')}_JOB`;
}

/**
 * A Slurm submitter. Run it with sh or bash: it submits one job array per stage (the
 * fine-tuning array with --dependency=afterok on its source stage's array); each
 * array task re-enters this script and runs the run at its index.
 */
export function slurmScript(plan: SweepPlan, o: EmitOptions): string {
  const lines = [
    header(plan, o, 'Slurm submitter'),
    `# Submit:   bash ${o.runsDir}/sweep.slurm        (from the tree root or anywhere else)`,
    '# Resources: SBATCH_ARGS="--cpus-per-task=4 --time=02:00:00 --partition=cpu" bash .../sweep.slurm',
    '# Re-submitting after a partial run is safe: completed runs are skipped, crashed ones resumed.',
    `SBATCH_ARGS=\${SBATCH_ARGS:---cpus-per-task=2 --time=01:00:00}`,
    '',
    RUN_ONE,
    '',
  ];
  for (const s of plan.stages) {
    lines.push(`task_${s.name.replace(/[^A-Za-z0-9_]/g, '_')}() {`, '  case "$1" in');
    s.runs.forEach((name, i) => lines.push(`    ${i}) ${runLine(plan.runs.find((r) => r.name === name)!, o)} ;;`));
    lines.push(`    *) echo "no task $1 in stage ${s.name}" >&2; exit 2 ;;`, '  esac', '}', '');
  }
  lines.push(
    '# Inside an array task: run this task\'s run, from the tree root (--chdir).',
    'if [ -n "${GRANULAR_SWEEP_STAGE:-}" ]; then',
    '  "task_$GRANULAR_SWEEP_STAGE" "$SLURM_ARRAY_TASK_ID"',
    '  exit',
    'fi',
    '',
    `ROOT=$(cd "$(dirname "$0")/${o.rootFromSweepDir}" && pwd)`,
    `mkdir -p "$ROOT/${o.runsDir}/logs"`,
    'SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"',
  );
  for (const s of plan.stages) {
    const fn = s.name.replace(/[^A-Za-z0-9_]/g, '_');
    const dep = s.from ? ` --dependency=afterok:$${jobVar(s.from)}` : '';
    lines.push(
      `${jobVar(s.name)}=$(sbatch --parsable $SBATCH_ARGS --array=0-${s.runs.length - 1}${dep} --job-name=${shellQuote(`${plan.name}-${s.name}`)} --chdir="$ROOT" --output="$ROOT/${o.runsDir}/logs/${s.name}-%a.out" --export=ALL,GRANULAR_SWEEP_STAGE=${fn} "$SCRIPT")`,
      `echo "stage ${s.name}: ${s.runs.length} runs, array job $${jobVar(s.name)}"`,
    );
  }
  return lines.join('\n') + '\n';
}
