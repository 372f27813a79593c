#!/usr/bin/env bash
# The early period of fine-tuning: sweep, then report.
# Run from anywhere:  bash examples/early-period/run.sh
# Runs go to runs/early-period/; tables and figures to examples/early-period/results/.
set -euo pipefail
cd "$(dirname "$0")/../.."
GRANULAR=${GRANULAR:-node bin/granular.js}
JOBS=${JOBS:-2}

if [ "${1:-}" = peak ]; then
  # Only the stop rules that can fire (below_fraction_of_peak) beside gradual K = 1 (EXPERIMENTS.md 4b).
  $GRANULAR sweep examples/early-period/sweep.yaml --jobs "$JOBS" --stage pretrain --stage gradual-k1 --stage fisher-peak --stage sharpness-peak
  $GRANULAR report runs/early-period --where stage=finetune --group-by sweep_stage \
    --metric test_acc --metric test_acc_hard --metric ood_acc --metric trainable_blocks \
    --metric fisher_trace --metric sharpness_avg \
    --out examples/early-period/results-peak-stop
  exit 0
fi

$GRANULAR sweep examples/early-period/sweep.yaml --jobs "$JOBS"

# ID and OOD accuracy per regime, how many blocks ended up trainable, and the
# Fisher trace / sharpness curves against step (dynamics-*-vs-step.png).
$GRANULAR report runs/early-period --where stage=finetune --group-by sweep_stage \
  --metric test_acc --metric test_acc_hard --metric ood_acc --metric trainable_blocks \
  --metric fisher_trace --metric sharpness_avg \
  --out examples/early-period/results
