#!/usr/bin/env bash
# Rare vs common features on synthetic data: sweep, then report.
# Run from anywhere:  bash examples/rare-features/run.sh
# Runs go to runs/rare-features/; tables and figures to examples/rare-features/results/.
set -euo pipefail
cd "$(dirname "$0")/../.."
GRANULAR=${GRANULAR:-node bin/granular.js}
JOBS=${JOBS:-2}

$GRANULAR sweep examples/rare-features/sweep.yaml --jobs "$JOBS"

# Alignment of the first-layer filters with the leaf (rare) and superclass (common)
# features, against random directions, and hard-sample accuracy of the probe, against
# the share of hard training samples, per pretraining level.
$GRANULAR report runs/rare-features --where stage=finetune \
  --group-by data.synthetic.hard_fraction_train --group-by pretrain_level \
  --metric test_acc_hard --metric test_acc_easy --metric align_fine --metric align_common --metric align_random \
  --out examples/rare-features/results
