#!/usr/bin/env bash
# Frozen overparameterization: sweep, then two reports.
# Run from anywhere:  bash examples/frozen-overparam/run.sh
# Runs go to runs/frozen-overparam/; tables and figures to examples/frozen-overparam/results/.
set -euo pipefail
cd "$(dirname "$0")/../.."
GRANULAR=${GRANULAR:-node bin/granular.js}
JOBS=${JOBS:-2}

$GRANULAR sweep examples/frozen-overparam/sweep.yaml --jobs "$JOBS"

# Test error against the number of trainable parameters (set by the freeze depth:
# 66 with only the head, 14,594 / 18,274 / 19,458 / 19,546 with 3 / 2 / 1 / 0 blocks
# frozen), one line per target size, and against epoch per run group (epoch-wise
# double descent).
$GRANULAR report runs/frozen-overparam --where sweep_stage=depth \
  --group-by data.train_size --group-by trainable_params --x trainable_params \
  --metric test_error --metric train_error \
  --out examples/frozen-overparam/results/depth

# The head alone (66 trainable parameters: 2 outputs x 33) against the target size,
# with and without label noise: the sample-wise interpolation peak.
$GRANULAR report runs/frozen-overparam --where sweep_stage=sample \
  --group-by data.label_noise --group-by data.train_size --x data.train_size \
  --metric test_error --metric train_error \
  --out examples/frozen-overparam/results/sample
