#!/usr/bin/env bash
# A wide wording round from start to end on a machine that has only this repository: the data
# (the SFT's replay shards, its conversations, the DPO's pairs), the SFT from checkpoints/wide-base,
# the round's measures, the DPO, its measures. Each part is skipped when its output is there and
# a stopped training run resumes, so the script can be started again after any interruption
# (`nohup bash configs/wide-round.sh > runs/round.log 2>&1 &`).
#
#   bash configs/wide-round.sh [SFT_CONFIG [DPO_CONFIG [SFT_DATA_FLAGS]]]
#
# SFT_CONFIG may also be a finished DPO's config, to run a second DPO after it.
#
# A DPO config may name its pairs' command on a line "# pairs: COMMAND" (run after the SFT and
# its measures, e.g. `tinyphi3 data dpo-own` on the SFT model: configs/wide-dpo-own.toml).
#
# Defaults: the twenty-fourth round (configs/wide-sft-sumframes.toml, then
# configs/wide-dpo-sumframes.toml). SFT_DATA_FLAGS are added to the round's `tinyphi3 data sft`
# command (e.g. "--chat-frames 0.15 --broader-harms" for configs/wide-sft-chatframes.toml; a flag
# given again overrides the default); the conversations file is the one the SFT config names.
# On 2 cores: data about 15 min, SFT about 95 min, each measure about 11 min, DPO about 15 min.
set -euo pipefail
cd "$(dirname "$0")/.."
SFT=${1:-configs/wide-sft-sumframes.toml}
DPO=${2:-configs/wide-dpo-sumframes.toml}
EXTRA=${3:-}
export OPENBLAS_NUM_THREADS=2 NUMBA_NUM_THREADS=2
T=tinyphi3
value() { sed -n "s/^$2 = \"\(.*\)\"/\1/p" "$1" | head -1; }
mkdir -p data runs

# The replay shards of the wide base's own text (configs/mini8-base-deeds.toml's commands)
if [ ! -d data/shards/phase2-deeds ]; then
  [ -f data/web.jsonl ] || $T data web --docs 20000 --seed 0 --out data/web.jsonl
  [ -f data/textbooks-long.jsonl ] || $T data textbooks --docs 30000 --seed 1 \
      --out data/textbooks-long.jsonl
  [ -d data/classifier ] || $T data classifier train --input data/web.jsonl --out data/classifier
  [ -d data/phases-long ] || $T data phases --web data/web.jsonl --classifier data/classifier \
      --textbooks data/textbooks-long.jsonl --out data/phases-long --synthetic-share 0.9
  [ -f data/induction.jsonl ] || $T data induction --docs 9000 --seed 0 --out data/induction.jsonl
  head -n 2000 data/induction.jsonl > data/induction-2k.jsonl
  [ -f data/everyday-moral.jsonl ] || $T data everyday --docs 4000 --seed 1 --scenes 1 \
      --scene-kinds unkind,kind --out data/everyday-moral.jsonl
  [ -f data/everyday-deeds.jsonl ] || $T data everyday --docs 10000 --seed 5 --scenes 1 \
      --scene-kinds deed-word,deed-unkind,deed-kind --out data/everyday-deeds.jsonl
  $T data tokenize --tokenizer checkpoints/mini-base --input data/phases-long/phase2.jsonl \
      --input data/everyday-moral.jsonl --input data/induction-2k.jsonl \
      --input data/everyday-deeds.jsonl --out data/shards/phase2-deeds
fi

# The SFT's conversations: the twenty-fourth round's data command, plus SFT_DATA_FLAGS (none when
# the first config is a finished DPO, to chain a second DPO after it)
CONVERSATIONS=$(value "$SFT" conversations)
# shellcheck disable=SC2086
[ -z "$CONVERSATIONS" ] || [ -f "$CONVERSATIONS" ] || $T data sft --n 40000 --seed 0 \
    --contrast 0.15 --pairs 0.1 --acts 0.45 --reasoned-acts --copy 0.12 --more-verbs 0.4 \
    --quote-acts --defined-verbs 0.3 --sum-frames 0.08 $EXTRA --out "$CONVERSATIONS"

train() {   # a recipe, run or resumed, unless its final model is there
  local out
  out=$(value "$1" dir)
  [ -f "$out/final/model.safetensors" ] && return
  if [ -d "$out" ]; then $T train "$1" --resume; else $T train "$1"; fi
}

once() {     # once FILE command...: the command's output into FILE, unless FILE is there
  local file=$1
  shift
  [ -f "$file" ] && return
  "$@" > "$file.part"
  mv "$file.part" "$file"
}

measure() {  # every round's measures of a chat model, into a folder (docs/wording.md)
  local ckpt=$1 into=$2
  mkdir -p "$into"
  once "$into/wording.txt" $T eval --ckpt "$ckpt" --task wording --n 200 \
      --json "$into/wording.json"
  once "$into/all.txt" $T eval --ckpt "$ckpt" --task all,safety --chat --shots 0 --n 200 \
      --json "$into/all.json"
  once "$into/facts.txt" python benchmarks/fact_recall.py --ckpt "$ckpt" --n 120
  once "$into/copy.txt" python benchmarks/reasons.py copy --defined --ckpt "$ckpt"
}

train "$SFT"
measure "$(value "$SFT" dir)/final" "runs/measures/$(basename "$SFT" .toml)"
# The DPO's pairs: the command on the DPO config's "# pairs:" line (pairs from the SFT model's
# own mistakes need the SFT first), else configs/wide-dpo-sumframes.toml's command
PAIRS=$(value "$DPO" preferences)
OWN=$(sed -n 's/^# pairs: //p' "$DPO" | head -1)
if [ ! -f "$PAIRS" ] && [ -n "$OWN" ]; then
  eval "$OWN"
elif [ ! -f "$PAIRS" ]; then
  $T data dpo --n 6000 --seed 0 --wording 1875 \
      --wording-kinds harm_answered,apart,apart_unnamed,outside,memory_value \
      --over-refusal-every 8 --out "$PAIRS"
fi
train "$DPO"
measure "$(value "$DPO" dir)/final" "runs/measures/$(basename "$DPO" .toml)"
echo "round done: runs/measures/"
