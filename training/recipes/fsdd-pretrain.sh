#!/usr/bin/env bash
# Self-supervised pretraining for the FSDD low-resource experiments (README, "Results on real speech"):
#   bash training/recipes/fsdd-pretrain.sh [data] [-- SETTING=VALUE...]
# writes runs/fsdd/pretrain.jsonl (52 min of unlabeled LibriSpeech and FSDD's 2700 official training
# recordings, their text unused), then pretrains training/configs/fsdd-pretrain.yaml into
# runs/fsdd-pretrain, resuming from its last checkpoint when one is there. `data` stops after the
# manifest. Then `bash training/recipes/fsdd-results.sh 10pct-pretrained ...` fine-tunes from it, and
# `python training/recipes/pretrain_curves.py runs/fsdd-pretrain` prints its learning curves.
# LEAVE_OUT=SPEAKER pretrains without that FSDD speaker's recordings (runs/fsdd/pretrain-without-SPEAKER.jsonl
# into runs/fsdd-pretrain-without-SPEAKER), so that a leave-one-speaker-out fold fine-tuned from it
# (PRETRAINED=that folder's last checkpoint) has never heard the speaker it is tested on, not even unlabelled.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python}
data=${DATA:-../shared/data}
only_data="" settings=()
while [ $# -gt 0 ]; do
    case $1 in
        data) only_data=1 ;;
        --) shift; settings=("$@"); break ;;
        *) echo "unknown argument $1 (data, -- SETTING=VALUE...)" >&2; exit 2 ;;
    esac
    shift
done
[ -e runs/fsdd/unlabeled.jsonl ] || bash training/recipes/fsdd-data.sh "$data/fsdd" runs/fsdd
if [ ! -e runs/fsdd/pretrain.jsonl ]; then
    "$python" -m training manifest --audio-dir "$data/unlabeled-librispeech" --out runs/fsdd/librispeech.jsonl
    cat runs/fsdd/librispeech.jsonl runs/fsdd/unlabeled.jsonl > runs/fsdd/pretrain.jsonl
fi
manifest=runs/fsdd/pretrain.jsonl out=runs/fsdd-pretrain
if [ -n "${LEAVE_OUT:-}" ]; then
    [ -e "runs/fsdd/loso-$LEAVE_OUT/test.jsonl" ] \
        || { echo "LEAVE_OUT=$LEAVE_OUT is not one of FSDD's speakers (runs/fsdd/loso-*, by fsdd-data.sh)" >&2; exit 2; }
    manifest=runs/fsdd/pretrain-without-$LEAVE_OUT.jsonl out=runs/fsdd-pretrain-without-$LEAVE_OUT
    grep -v "/[0-9]_${LEAVE_OUT}_" runs/fsdd/pretrain.jsonl > "$manifest"  # FSDD names: DIGIT_SPEAKER_INDEX.wav
fi
[ -z "$only_data" ] || exit 0
last=$(ls -d "$out"/checkpoint-* 2>/dev/null | sort -V | tail -1 || true)
mkdir -p "$out"
"$python" -m training pretrain --config training/configs/fsdd-pretrain.yaml "manifest=$manifest" "output_dir=$out" \
    ${settings[@]+"${settings[@]}"} ${last:+--resume "$last"} >> "$out/train.log" 2>&1
