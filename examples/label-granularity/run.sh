#!/usr/bin/env bash
# The label-granularity study: the level sweep and its controls on synthetic data,
# and the same question on Omniglot; each sweep, then its report.
# Run from anywhere:  bash examples/label-granularity/run.sh [levels|controls|omniglot]...
# Runs go to runs/label-granularity*/; tables and figures to examples/label-granularity/results*/.
set -euo pipefail
cd "$(dirname "$0")/../.."
GRANULAR=${GRANULAR:-node bin/granular.js}
JOBS=${JOBS:-2}
PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(levels controls omniglot)

for part in "${PARTS[@]}"; do
  case "$part" in
  levels)
    $GRANULAR sweep examples/label-granularity/sweep.yaml --jobs "$JOBS"
    # Fine-tuned accuracy on the coarse target against the pretraining level, per regime;
    # the hard test samples (no superclass features) are where fine labels should help.
    $GRANULAR report runs/label-granularity --where stage=finetune \
      --group-by pretrain_level --group-by finetune.freeze \
      --metric test_acc --metric test_acc_easy --metric test_acc_hard --metric align_fine \
      --out examples/label-granularity/results
    ;;
  controls)
    $GRANULAR sweep examples/label-granularity/controls.yaml --jobs "$JOBS"
    # The same table for pretraining on relabelled data (shuffled parents, random
    # pseudo-subclasses), always fine-tuned on the true superclasses.
    $GRANULAR report runs/label-granularity-controls --where stage=finetune \
      --group-by source.data.relabel --group-by pretrain_level --group-by finetune.freeze \
      --metric test_acc --metric test_acc_easy --metric test_acc_hard --metric align_fine \
      --out examples/label-granularity/results-controls
    ;;
  omniglot)
    $GRANULAR sweep examples/label-granularity/omniglot.yaml --jobs "$JOBS"
    # Alphabet accuracy after fine-tuning, per pretraining labels and regime ...
    $GRANULAR report runs/label-granularity-omniglot --where stage=finetune \
      --group-by source.data.relabel --group-by pretrain_level --group-by sweep_stage \
      --metric test_acc --metric train_acc \
      --out examples/label-granularity/results-omniglot
    # ... and of the pretrained networks themselves, read at the alphabet level
    # through their own head (a character network's probabilities summed per alphabet).
    $GRANULAR report runs/label-granularity-omniglot --where stage=pretrain \
      --group-by data.relabel --group-by train.level \
      --metric test_acc --metric test_acc@alphabet --no-png \
      --out examples/label-granularity/results-omniglot/pretrain
    ;;
  *) echo "unknown part '$part' (levels, controls or omniglot)" >&2; exit 2 ;;
  esac
done
