#!/usr/bin/env bash
# The README's FSDD results with training/configs/fsdd-scratch.yaml, from fresh runs:
#   bash training/recipes/fsdd-results.sh [ROW...]      (default: every row, one after another)
# ROWs: full (the official training labels less dev), 10pct (270 labels), loso-SPEAKER (leave one
# speaker out: george jackson lucas nicolas theo yweweler), loso (all six). Each row trains from
# scratch, keeps its best checkpoint on its dev set, and is evaluated on its test set greedy and with
# the bigram LM (runs/fsdd/words.arpa); a row whose results exist is skipped, an interrupted one
# resumes. Settings after `--` go to every run (e.g. `-- max_steps=2000`). Rows are independent: two
# shells with one thread each (OMP_NUM_THREADS=1) run two rows at once on a 2-core machine.
# From a pretrained checkpoint (PRETRAINED=folder, by default the last of runs/fsdd-pretrain, which
# training/recipes/fsdd-pretrain.sh makes), with the same fine-tuning recipe and budget:
#   10pct-pretrained, 10pct-pretrained-frozen (the feature encoder kept as pretrained),
#   loso-pretrained[-SPEAKER], selftrain-pretrained (as selftrain, from the pretrained rows).
# Self-training: selftrain has the 10pct row's model label the other 2370 training recordings with
# the LM; those whose posterior confidence is >= MIN_CONFIDENCE (0.9) join the 270, and a new run
# learns from them all.
# Then `python training/recipes/fsdd_table.py` prints the table.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python}
fsdd=${FSDD:-runs/fsdd}
out=${OUT:-runs/fsdd-results}
rows=() settings=()
while [ $# -gt 0 ]; do
    if [ "$1" = -- ]; then shift; settings=("$@"); break; fi
    rows+=("$1"); shift
done
[ ${#rows[@]} -gt 0 ] || rows=(full 10pct loso)
speakers="george jackson lucas nicolas theo yweweler"
[ -e "$fsdd/test.jsonl" ] || bash training/recipes/fsdd-data.sh ../shared/data/fsdd "$fsdd"

# The checkpoint the pretrained rows start from, checked before anything runs.
pretrained=${PRETRAINED:-$(ls -d runs/fsdd-pretrain/checkpoint-* 2>/dev/null | sort -V | tail -1 || true)}
if [[ " ${rows[*]} " =~ pretrained ]] && [ ! -e "$pretrained/config.json" ]; then
    echo "no pretrained checkpoint '$pretrained' (bash training/recipes/fsdd-pretrain.sh, or PRETRAINED=folder)" >&2
    exit 2
fi

run() {  # NAME TRAIN DEV TEST [SETTINGS...]
    local name=$1 train=$2 dev=$3 test=$4
    shift 4
    local folder="$out/$name"
    [ -e "$folder/test.json" ] && { echo "have $folder/test.json"; return; }
    mkdir -p "$folder"
    local last
    last=$(ls -d "$folder"/checkpoint-* 2>/dev/null | sort -V | tail -1 || true)
    echo "$(date -u +%FT%TZ) $name: training"
    "$python" -m training finetune --config training/configs/fsdd-scratch.yaml "train_manifest=$train" \
        "eval_manifest=$dev" "output_dir=$folder" "$@" ${settings[@]+"${settings[@]}"} ${last:+--resume "$last"} \
        > "$folder/train.log" 2>&1
    "$python" -m training evaluate --model "$folder/best" --manifest "$test" --lm "$fsdd/words.arpa" \
        --details "$folder/test-details.jsonl" > "$folder/test.json.part"
    mv "$folder/test.json.part" "$folder/test.json"
    echo "$(date -u +%FT%TZ) $name: done"
}

fold() {  # NAME SPEAKER [SETTINGS...]: train on the other five speakers, test on SPEAKER's 500
    local name=$1 speaker=$2
    shift 2
    run "$name" "$fsdd/loso-$speaker/train.jsonl" "$fsdd/loso-$speaker/dev.jsonl" "$fsdd/loso-$speaker/test.jsonl" "$@"
}

selftrain() {  # NAME LABELLER-ROW [SETTINGS...]: LABELLER-ROW's model labels train-rest; NAME learns from them and the 270
    local name=$1 labeller="$out/$2/best" folder="$out/$1"
    shift 2
    [ -e "$labeller/config.json" ] || { echo "$name needs the ${labeller%/best} row first" >&2; exit 2; }
    if [ ! -e "$folder/pseudo.jsonl" ]; then
        mkdir -p "$folder"
        "$python" -m training pseudo-label --model "$labeller" --lm "$fsdd/words.arpa" \
            --manifest "$fsdd/train-rest.jsonl" --labelled "$fsdd/train-10pct.jsonl" \
            --min-confidence "${MIN_CONFIDENCE:-0.9}" --scores-out "$folder/scores.jsonl" \
            --out "$folder/pseudo.jsonl.part" > "$folder/pseudo.log" 2>&1
        mv "$folder/pseudo.jsonl.part" "$folder/pseudo.jsonl"
    fi
    run "$name" "$folder/pseudo.jsonl" "$fsdd/dev.jsonl" "$fsdd/test.jsonl" "$@"
}

for row in "${rows[@]}"; do
    case $row in
        full) run full "$fsdd/train.jsonl" "$fsdd/dev.jsonl" "$fsdd/test.jsonl" ;;
        10pct) run 10pct "$fsdd/train-10pct.jsonl" "$fsdd/dev.jsonl" "$fsdd/test.jsonl" ;;
        loso) for speaker in $speakers; do fold "loso-$speaker" "$speaker"; done ;;
        10pct-pretrained) run "$row" "$fsdd/train-10pct.jsonl" "$fsdd/dev.jsonl" "$fsdd/test.jsonl" "init=$pretrained" ;;
        10pct-pretrained-frozen) run "$row" "$fsdd/train-10pct.jsonl" "$fsdd/dev.jsonl" "$fsdd/test.jsonl" \
                                     "init=$pretrained" freeze_feature_encoder=true ;;
        selftrain) selftrain selftrain 10pct ;;
        selftrain-pretrained) selftrain selftrain-pretrained 10pct-pretrained "init=$pretrained" ;;
        loso-pretrained) for speaker in $speakers; do fold "loso-pretrained-$speaker" "$speaker" "init=$pretrained"; done ;;
        loso-pretrained-*) fold "$row" "${row#loso-pretrained-}" "init=$pretrained" ;;
        loso-*) fold "$row" "${row#loso-}" ;;
        *) echo "unknown row $row (full, 10pct, loso, loso-SPEAKER, 10pct-pretrained, 10pct-pretrained-frozen, selftrain," \
                "selftrain-pretrained, loso-pretrained, loso-pretrained-SPEAKER)" >&2; exit 2 ;;
    esac
done
