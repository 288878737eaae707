#!/usr/bin/env bash
# Leave speakers out: how the default model's recipe does on speakers it never heard, estimated over all
# of digits-multi's 194 speakers instead of its ~40 dev speakers alone:
#   make digits-folds     (or: bash training/recipes/digits-multi-folds.sh [data folder] [work folder])
# digits-multi's speakers are split into FOLDS (5) groups of whole speakers, each about a fifth of every
# source's; group 0 is the recipe's own dev set. For each group, the recipe's third stage is trained
# again without that group's speakers (their recordings, the strings joined from their words and their
# transcripts in the LM) and the group is transcribed with the LM within the model's words, as the
# server does. The first two stages never see digits-multi, so every fold starts from the recipe's
# second stage (make digits-model first: its work folder, runs/digits, must hold it).
# What differs from the shipped third stage, so that five folds fit in about 70 min on 2 cores: STEPS
# (1250) updates instead of 2500, and each fold keeps its last checkpoint (the dev set that picks the
# shipped model's is a held-out group here). Fold 0 against the shipped model shows what that costs.
# Each fold is decoded with the LM weights of the model folder (MODEL, models/digits: its lm.json), as the
# server decodes it. Then `python training/recipes/digits_multi.py folds-table runs/digits/multi-folds`
# prints the table, and `python training/recipes/tune_lm.py` with each fold's --model, --manifest and --lm
# tries other weights on the same held-out speakers (how the recipe's were chosen).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${1:-../shared/data}
work=${2:-runs/digits}
python=${PYTHON:-python}
folds=${FOLDS:-5}
steps=${STEPS:-1250}
weights=$("$python" -c "import json, sys; w = json.load(open(sys.argv[1])); print(w['alpha'], w['beta'])" \
    "${MODEL:-models/digits}/lm.json")
read -r alpha beta <<< "$weights"
[ -e "$work/train/done" ] || { echo "no second stage in $work/train: run make digits-model first" >&2; exit 2; }
source training/recipes/steps.sh  # step, step_into, train
printf '%s\n' zero one two three four five six seven eight nine oh > "$work/multi-folds-lexicon.txt"
for fold in $(seq 0 $((folds - 1))); do
    run="$work/multi-folds/fold-$fold"
    mkdir -p "$run/eval"
    log="$run/commands.txt"
    : > "$log"
    step "$run/dev.jsonl" "$python" training/recipes/digits_multi.py split "$data/digits-multi" "$run" \
        --fold "$fold" --folds "$folds"
    step "$run/connected/manifest.jsonl" "$python" -m training connect --manifest "$run/train-words.jsonl" \
        --out "$run/connected" --speaker '()' --count 600 --items 2 7 --seed 9
    step "$run/digits.arpa" "$python" -m training lm --manifest "$work/fsdd/train.jsonl" \
        --manifest "$work/connected-train/manifest.jsonl" --manifest "$work/synth/manifest.jsonl" \
        --manifest "$work/synth-oh/manifest.jsonl" --manifest "$run/train.jsonl" --out "$run/digits.arpa"
    multi=$run/train.jsonl  # the same manifests as the shipped third stage, with this fold's speakers left out
    general="$work/fsdd/train.jsonl,$work/connected-train/manifest.jsonl,$work/synth/manifest.jsonl"
    general+=",$work/synth-oh/manifest.jsonl,$multi,$multi,$multi,$multi,$multi,$multi"
    general+=",$run/connected/manifest.jsonl,$work/noise/manifest.jsonl,$work/not-digits/manifest.jsonl"
    train "$run/general" training/configs/digits-multi.yaml "init=$work/train/best" "train_manifest=$general" \
        "eval_manifest=$work/connected-dev/manifest.jsonl" "lm=$run/digits.arpa" "max_steps=$steps" \
        "eval_every=$steps"
    for source in an4 speechcommands audiomnist; do
        step_into "$run/eval/$source.json" "$python" -m training evaluate --model "$run/general/checkpoint-$steps" \
            --manifest "$run/dev-$source.jsonl" --lm "$run/digits.arpa" --lm-alpha "$alpha" --lm-beta "$beta" \
            --lexicon "$work/multi-folds-lexicon.txt"
    done
done
"$python" training/recipes/digits_multi.py folds-table "$work/multi-folds"
