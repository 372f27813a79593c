#!/usr/bin/env bash
# The label-granularity study on synthetic data: sweep, then report.
# Run from the repository root:  bash examples/label-granularity/run.sh
# Runs go to runs/label-granularity/; tables and figures to examples/label-granularity/results/.
set -euo pipefail
cd "$(dirname "$0")/../.."
GRANULAR=${GRANULAR:-node bin/granular.js}
JOBS=${JOBS:-2}

$GRANULAR sweep examples/label-granularity/sweep.yaml --jobs "$JOBS"

# Fine-tuned accuracy on the coarse target against the pretraining level, per regime;
# the hard test samples (no superclass features) are where fine labels should help.
$GRANULAR report runs/label-granularity --where stage=finetune \
  --group-by pretrain_level --group-by finetune.freeze \
  --metric test_acc --metric test_acc_easy --metric test_acc_hard --metric align_fine \
  --out examples/label-granularity/results
