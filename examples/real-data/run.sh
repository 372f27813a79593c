#!/usr/bin/env bash
# Label granularity on real images, compared fairly (EXPERIMENTS.md section 5).
# Run from anywhere:  bash examples/real-data/run.sh [fashion-mnist] [omniglot]   (both by default)
# Runs go to runs/real-fashion-mnist/ and runs/real-omniglot/; tables and figures
# to examples/real-data/results-*/.
set -euo pipefail
cd "$(dirname "$0")/../.."
GRANULAR=${GRANULAR:-node bin/granular.js}
JOBS=${JOBS:-2}
WHAT=${*:-fashion-mnist omniglot}

study() { # name sweep-file coarsest-level source-stages...
  local name=$1 file=$2 coarse=$3
  shift 3
  # The cluster stage clusters the features of the coarse runs: those finish first.
  local stages=()
  for s in "$@"; do stages+=(--stage "$s"); done
  $GRANULAR sweep "$file" --jobs "$JOBS" "${stages[@]}"
  $GRANULAR sweep "$file" --jobs "$JOBS"
  # Every source at the coarsest level: probe (freeze all, new head), full fine-tune, coarsen (kept fine head).
  $GRANULAR report "runs/$name" --where stage=finetune --group-by pretrain_level --group-by finetune.freeze --group-by finetune.head \
    --metric test_acc --metric test_error --metric val_acc \
    --out "examples/real-data/results-$name" --no-png
  # The sources themselves: did each learn its level, and what does it score at the coarsest level read through summed probabilities?
  $GRANULAR report "runs/$name" --where stage=pretrain --group-by pretrain_level \
    --metric test_acc --metric train_acc_final --metric converged --metric test_mistake_severity --metric test_hdist@5 --metric "test_acc@$coarse" \
    --out "examples/real-data/results-$name/pretraining" --no-png
}

for w in $WHAT; do
  case $w in
    fashion-mnist)
      [ -d datasets/fashion-mnist-200 ] || npm run --silent dataset:fashion-mnist -- --out datasets/fashion-mnist-200 --train-per-class 200 --test-per-class 200
      study real-fashion-mnist examples/real-data/fashion-mnist.yaml group pretrain group ;;
    omniglot)
      study real-omniglot examples/real-data/omniglot.yaml alphabet pretrain alphabet ;;
    *) echo "unknown study '$w' (fashion-mnist, omniglot)" >&2; exit 2 ;;
  esac
done
