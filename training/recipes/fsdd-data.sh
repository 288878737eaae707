#!/usr/bin/env bash
# Manifests and a bigram LM for the Free Spoken Digit Dataset experiments (README "Results on real speech").
#   bash training/recipes/fsdd-data.sh [FSDD folder (../shared/data/fsdd)] [output folder (runs/fsdd)]
# writes, from FSDD's official split (test: recordings 0-4 of each digit and speaker):
#   train.jsonl   the official training set less the dev set (2640)
#   dev.jsonl     recording 5 of each digit and speaker (60): picks the best checkpoint, never test
#   test.jsonl    the official test set (300)
#   train-10pct.jsonl  10% of the official training labels (270 of 2700), drawn from train.jsonl within
#                      each digit (seed 0);
#   train-rest.jsonl   the other 2370 training recordings (their text is not used when pseudo-labelling)
#   unlabeled.jsonl    the official training audio (2700), for pretraining (text ignored)
#   words.arpa    a bigram language model of train.jsonl's transcripts, for beam search
#   loso-SPEAKER/{train,dev,test}.jsonl  leave one speaker out: train on the other five (all their
#                 recordings but number 5, which is dev), test on all 500 of SPEAKER's
set -euo pipefail
data=${1:-../shared/data/fsdd}
out=${2:-runs/fsdd}
python=${PYTHON:-python}
manifest() { "$python" -m training manifest "$@"; }

manifest --transcripts "$data/transcripts_train.tsv" --out "$out/train.jsonl" \
    --dev-out "$out/dev.jsonl" --dev-match '_5\.wav$'
manifest --transcripts "$data/transcripts_test.tsv" --out "$out/test.jsonl"
manifest --transcripts "$data/transcripts_train.tsv" --exclude '_5\.wav$' --count 270 --seed 0 \
    --out "$out/train-10pct.jsonl" --rest-out "$out/train-rest.jsonl"
manifest --transcripts "$data/transcripts_train.tsv" --out "$out/unlabeled.jsonl"
"$python" -m training lm --manifest "$out/train.jsonl" --out "$out/words.arpa"
for speaker in george jackson lucas nicolas theo yweweler; do
    manifest --transcripts "$data/transcripts_train.tsv" --transcripts "$data/transcripts_test.tsv" \
        --exclude "_${speaker}_" --out "$out/loso-$speaker/train.jsonl" \
        --dev-out "$out/loso-$speaker/dev.jsonl" --dev-match '_5\.wav$'
    manifest --transcripts "$data/transcripts_train.tsv" --transcripts "$data/transcripts_test.tsv" \
        --include "_${speaker}_" --out "$out/loso-$speaker/test.jsonl"
done
