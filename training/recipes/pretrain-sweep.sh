#!/usr/bin/env bash
# Short pretraining runs that change one setting of training/configs/fsdd-pretrain.yaml each, to see what
# makes the contrastive task learn (README, "Results on real speech"):
#   bash training/recipes/pretrain-sweep.sh [NAME...]     (default: every run below, one after another)
# Each run: 400 updates of 20 s batches into runs/pretrain-sweep/NAME (a finished one is skipped); then
# `python training/recipes/pretrain_curves.py runs/pretrain-sweep/*` prints their curves.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python}
out=${OUT:-runs/pretrain-sweep}
[ -e runs/fsdd/pretrain.jsonl ] || bash training/recipes/fsdd-pretrain.sh data
declare -A runs=(
    [base]=""
    [encoder-gradient-1]="feature_grad_mult=1.0"
    [lr-3e-3]="learning_rate=3e-3"
    [lr-3e-4]="learning_rate=3e-4"
    [temperature-0.2]="logit_temperature=0.2"
    [paper-masks]="mask_length=10 mask_min_spans=2"
    [layer-norm-first]="model.feat_extract_norm=layer model.do_stable_layer_norm=true model.conv_bias=true"
    [negatives-20]="num_negatives=20"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(base encoder-gradient-1 lr-3e-3 paper-masks layer-norm-first temperature-0.2 lr-3e-4 negatives-20)
for name in "${names[@]}"; do
    [ -n "${runs[$name]+set}" ] || { echo "unknown run $name (${!runs[*]})" >&2; exit 2; }
    folder="$out/$name"
    [ -e "$folder/checkpoint-400" ] && { echo "have $folder"; continue; }
    echo "$(date -u +%FT%TZ) $name: ${runs[$name]:-the config as it is}"
    # shellcheck disable=SC2086  # the settings are words
    "$python" -m training pretrain --config training/configs/fsdd-pretrain.yaml "output_dir=$folder" max_steps=400 \
        max_batch_seconds=20 warmup_steps=100 save_every=400 ${runs[$name]} > "$folder.log" 2>&1
done
