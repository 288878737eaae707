#!/usr/bin/env bash
# The shipped default model, models/digits/, made from scratch by our own commands:
#   make digits-model            (or: bash training/recipes/digits-model.sh [data folder] [work folder] [model folder])
# Data from ../shared/data (never copied into the repository), work files in runs/digits, the model
# folder in models/digits. DATA_ONLY=1 stops after making the data. Every step is skipped when its output exists, and an interrupted training
# run resumes from its last checkpoint, so running it again continues where it stopped.
# LEAVE_OUT=SPEAKER (george jackson lucas nicolas theo yweweler) runs the same recipe as one
# leave-one-speaker-out fold instead: FSDD and its connected strings from the other five speakers only
# (the synthetic voices as always), tested on all 500 of SPEAKER's recordings and on connected strings
# of them; everything of the fold's goes in runs/digits/loso-SPEAKER, and no model folder is written.
# On 2 idle CPU cores, measured from scratch: data 6 min, training 95 min (three stages: 15 + 50 + 30),
# evaluation, export and packaging 1 min: 1 h 41 min in all.
# A run is one draw, not the shipped model again: fourteen third stages run since it made 6.8-10.3% on
# digits-multi's dev speakers where it makes 6.41% (docs/results.md), so a new run replaces it only if it
# beats it there and on FSDD.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${1:-../shared/data}
work=${2:-runs/digits}
out=${3:-models/digits}
python=${PYTHON:-python}
export PYTHON=$python
speaker='^[0-9]+_([a-z]+)_'  # FSDD file names: DIGIT_SPEAKER_INDEX.wav
fold=${LEAVE_OUT:-}
fsdd="$work/fsdd${fold:+/loso-$fold}"  # the FSDD manifests this run trains, picks and tests on
run="$work${fold:+/loso-$fold}"  # what is this run's own: connected strings, LM, training, results
[ -z "$fold" ] || [[ " george jackson lucas nicolas theo yweweler " == *" $fold "* ]] \
    || { echo "LEAVE_OUT=$fold is not one of FSDD's speakers" >&2; exit 2; }
mkdir -p "$run/eval"
log="$run/commands.txt"
: > "$log"  # every command that makes the model goes into its provenance, also those done on an earlier run
source training/recipes/steps.sh  # step, step_into, train

# 1. Data: FSDD's official split with a dev set carved from training (recording 5 of each digit and
#    speaker); connected strings of one speaker's recordings; synthetic strings from every English voice.
step "$work/fsdd/test.jsonl" bash training/recipes/fsdd-data.sh "$data/fsdd" "$work/fsdd"
step "$run/connected-train/manifest.jsonl" "$python" -m training connect --manifest "$fsdd/train.jsonl" \
    --out "$run/connected-train" --speaker "$speaker" --count 2000 --items 2 7 --seed 1
step "$run/connected-dev/manifest.jsonl" "$python" -m training connect --manifest "$fsdd/dev.jsonl" \
    --out "$run/connected-dev" --speaker "$speaker" --count 60 --items 2 7 --seed 2
# The connected test set: 300 strings of 3-10 digits from FSDD's test recordings (never trained on).
step "$run/connected-test/manifest.jsonl" "$python" -m training connect --manifest "$fsdd/test.jsonl" \
    --out "$run/connected-test" --speaker "$speaker" --count 300 --items 3 10 --seed 3
step "$work/synth/manifest.jsonl" "$python" -m training synth --digits 1 7 --voices english --count 3000 --seed 4 \
    --out "$work/synth" --workers 2
# "oh" for zero: FSDD says every zero "zero", so "oh" comes from synthesis alone; 1500 more strings
# say every zero "oh", with zeros four times as common as in the set above (which says 30% of them so):
# ~2800 "oh" in the two sets where there were ~940, with which the previous model still lost it after "two"
# ("two oh four seven" -> "two four seven").
step "$work/synth-oh/manifest.jsonl" "$python" -m training synth --digits 1 7 --oh-fraction 1.0 --zero-fraction 0.4 \
    --voices english --count 1500 --seed 5 --out "$work/synth-oh" --workers 2
# An "oh" test set: 300 new strings (seed 6, never trained on) with every zero said "oh", from the same
# English voices (held-out strings, not held-out voices: no real "oh" recordings are at hand).
step "$work/synth-oh-test/manifest.jsonl" "$python" -m training synth --digits 2 7 --oh-fraction 1.0 \
    --zero-fraction 0.3 --voices english --count 300 --seed 6 --out "$work/synth-oh-test" --workers 2
# Many more voices: digits-multi's real recordings (194 speakers) split by speaker into train and a dev set
# of whole speakers that picks the last stage's checkpoints; strings joined from its isolated words (voices
# mixed: each speaker has a few words only); and clips with nothing to say (an empty transcript): noise,
# hum, clicks, tones, and English sentences without a digit word (nor "to", "for", "won", "ate" ..., which
# sound like one), so that the model learns to say nothing rather than invent digits.
step "$work/multi/dev.jsonl" "$python" training/recipes/digits_multi.py split "$data/digits-multi" "$work/multi"
step "$work/multi-connected/manifest.jsonl" "$python" -m training connect --manifest "$work/multi/train-words.jsonl" \
    --out "$work/multi-connected" --speaker '()' --count 600 --items 2 7 --seed 9
step "$work/noise/manifest.jsonl" "$python" training/recipes/digits_multi.py noise "$work/noise" --count 600 --seed 8
step "$work/not-digits/manifest.jsonl" "$python" -m training synth --text "$data/text/gutenberg-lm-corpus.txt.gz" \
    --without-words zero,one,two,three,four,five,six,seven,eight,nine,oh,o,owe,to,too,for,fore,won,ate,nein \
    --empty-text --min-words 2 --max-words 10 --voices english --count 800 --seed 10 --out "$work/not-digits" --workers 2
step "$work/realspeech.jsonl" "$python" -m training manifest --transcripts "$data/realspeech/manifest.tsv" \
    --include 'cards/004\.wav$' --out "$work/realspeech.jsonl"
# FSDD's isolated recordings twice: the only real voices in the set, weighted up against the 4500 synthetic
# strings. Measured against once (one run each, the same first stage): the leave-one-speaker-out fold lucas
# 14.0% -> 5.8% with the LM on his isolated digits, 5.9% -> 4.6% on connected strings of them; the
# synthetic "oh" strings 5.4% -> 6.2% (dev sets level: 2.8% / 3.2%, one word of 317).
# Three times (measured, one run each): four folds' speakers 13.1% -> 10.7% on average with the LM, but
# the full model 0.67% -> 1.67% greedy on FSDD's test split (0.00% -> 0.67% with the LM); kept at twice.
train="$fsdd/train.jsonl,$fsdd/train.jsonl,$run/connected-train/manifest.jsonl,$work/synth/manifest.jsonl,$work/synth-oh/manifest.jsonl"
dev="$fsdd/dev.jsonl,$run/connected-dev/manifest.jsonl"
multi=$work/multi/train.jsonl
general="$fsdd/train.jsonl,$run/connected-train/manifest.jsonl,$work/synth/manifest.jsonl"
general+=",$work/synth-oh/manifest.jsonl,$multi,$multi,$multi,$multi,$multi,$multi"
general+=",$work/multi-connected/manifest.jsonl,$work/noise/manifest.jsonl,$work/not-digits/manifest.jsonl"

# 2. The language model: a bigram of the training transcripts (digit words, "oh").
step "$run/digits.arpa" "$python" -m training lm --manifest "$fsdd/train.jsonl" \
    --manifest "$run/connected-train/manifest.jsonl" --manifest "$work/synth/manifest.jsonl" \
    --manifest "$work/synth-oh/manifest.jsonl" --manifest "$work/multi/train.jsonl" --out "$run/digits.arpa"

# The LM's weight and word bonus beam search uses with it (the folder's lm.json): those that made the fewest
# errors on digits-multi's speakers, each decoded by a model that never heard them (training/recipes/
# digits-multi-folds.sh, then tune_lm.py over its five folds): 5.75% of 1200 words against 7.25% at the
# defaults (0.5, 1), most of the difference dropped digits; no word on 120 held-out noise clips either way.
lm_weights=(0.2 6)

[ "${DATA_ONLY:-0}" = 1 ] && exit 0  # DATA_ONLY=1: stop here

# 3. Training in three stages (the third below), each keeping its best checkpoint on its dev set. First FSDD's isolated
#    digits alone with the FSDD recipe (training/configs/fsdd-scratch.yaml): from scratch, the model learns
#    these few clean words far faster than it learns them from the whole mixed set at once (measured:
#    dev WER 1.7% against 78% after the same ~20 minutes). Then the whole set with augmentation,
#    starting from it (training/configs/digits.yaml).
#    The first stage is the FSDD recipe as it was before its 4-layer, moving-average version (kept here
#    by the settings after vocab=english): started from that version instead, the second stage ended
#    far worse (connected FSDD test strings 53.6% greedy / 23.1% with the LM, against 16.2% / 1.3%).
train "$run/isolated" training/configs/fsdd-scratch.yaml vocab=english \
    model.num_hidden_layers=3 mask_time_prob=0.1 "augment.speed=[0.9, 1.1]" ema_decay=0 max_steps=4000 \
    "train_manifest=$fsdd/train.jsonl" "eval_manifest=$fsdd/dev.jsonl"
train "$run/train" training/configs/digits.yaml "init=$run/isolated/best" \
    "train_manifest=$train" "eval_manifest=$dev" "lm=$run/digits.arpa"

# The third stage: every voice above, the clips with nothing to say, and harder augmentation (noise of five
# kinds down to 0 dB, rooms, silence around the speech), from the second stage (training/configs/digits-multi.yaml);
# checkpoints picked on digits-multi's dev speakers, whom it never trains on.
train "$run/general" training/configs/digits-multi.yaml "init=$run/train/best" \
    "train_manifest=$general" "eval_manifest=$work/multi/dev.jsonl,$run/connected-dev/manifest.jsonl" \
    "lm=$run/digits.arpa"

# 4. Evaluation (greedy, and beam search with the LM within the model's eleven words, as the server
#    decodes by default) and the ONNX export, checked against PyTorch.
printf '%s\n' zero one two three four five six seven eight nine oh > "$run/lexicon.txt"
evaluate() {  # NAME MANIFEST
    step_into "$run/eval/$1.json" "$python" -m training evaluate --model "$run/general/best" --manifest "$2" \
        --lm "$run/digits.arpa" --lm-alpha "${lm_weights[0]}" --lm-beta "${lm_weights[1]}" --lexicon "$run/lexicon.txt"
}
evaluate fsdd-test "$fsdd/test.jsonl"
evaluate connected-test "$run/connected-test/manifest.jsonl"
evaluate realspeech "$work/realspeech.jsonl"
evaluate oh-test "$work/synth-oh-test/manifest.jsonl"
for source in an4 speechcommands audiomnist; do evaluate "multi-dev-$source" "$work/multi/dev-$source.jsonl"; done
[ -z "$fold" ] || exit 0  # a fold's results are its eval/*.json
step "$work/onnx/model.onnx" "$python" -m export onnx --model "$work/general/best" --out "$work/onnx" \
    --verify-audio "$data/fsdd/recordings/7_theo_0.wav" "$data/realspeech/audio/pocketsphinx/test/data/cards/004.wav"

# 5. The model folder, with its provenance and card.
"$python" -m training package --out "$out" --checkpoint "$work/general/best" --onnx "$work/onnx" \
    --lm "$work/digits.arpa" --lm-weights "${lm_weights[@]}" --lexicon "$work/lexicon.txt" --config training/configs/digits-multi.yaml --commands "$log" \
    --card training/recipes/digits-card.md \
    --data "fsdd-train=$work/fsdd/train.jsonl" --data "connected-train=$work/connected-train/manifest.jsonl" \
    --data "synthetic-train=$work/synth/manifest.jsonl" --data "synthetic-oh-train=$work/synth-oh/manifest.jsonl" \
    --data "fsdd-dev=$work/fsdd/dev.jsonl" \
    --data "connected-dev=$work/connected-dev/manifest.jsonl" --data "fsdd-test=$work/fsdd/test.jsonl" \
    --data "connected-test=$work/connected-test/manifest.jsonl" --data "realspeech=$work/realspeech.jsonl" \
    --data "oh-test=$work/synth-oh-test/manifest.jsonl" --data "multi-train=$work/multi/train.jsonl" \
    --data "multi-connected-train=$work/multi-connected/manifest.jsonl" --data "multi-dev=$work/multi/dev.jsonl" \
    --data "noise-train=$work/noise/manifest.jsonl" --data "not-digits-train=$work/not-digits/manifest.jsonl" \
    --results "FSDD test (isolated digits, 300)=$work/eval/fsdd-test.json" \
    --results "connected FSDD test strings (300 x 3-10 digits)=$work/eval/connected-test.json" \
    --results "real recording, other speaker and microphone=$work/eval/realspeech.json" \
    --results "synthetic strings with 'oh' for zero (300 held-out strings, the training voices)=$work/eval/oh-test.json" \
    --results "digits-multi dev speakers, AN4 connected strings=$work/eval/multi-dev-an4.json" \
    --results "digits-multi dev speakers, Speech Commands words=$work/eval/multi-dev-speechcommands.json" \
    --results "digits-multi dev speakers, AudioMNIST words=$work/eval/multi-dev-audiomnist.json"
