#!/usr/bin/env bash
# The twenty-seventh round's merges (docs/wording.md): chat models made by `tinyphi3 merge` from
# the DPOs of the twenty-sixth round and configs/wide-dpo-social-rehearsed-b05.toml, all
# fine-tuned from runs/wide-sft-chatframes/final, and from the two wide SFTs, both fine-tuned
# from checkpoints/wide-base (each trained by `bash configs/wide-round.sh SFT_CONFIG DPO_CONFIG`);
# measured as every round's models are (wording, then all,safety in chat form). Each part is
# skipped when its output is there, so the script can be started again after an interruption
# (`nohup bash configs/wide-merges.sh > runs/merges.log 2>&1 &`). Seconds a merge, about 9 min
# a model's measures on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS=2 NUMBA_NUM_THREADS=2
T=tinyphi3
SFT=runs/wide-sft-chatframes/final
B05=runs/wide-dpo-chatframes-b05/final            # beta 0.5: outside 99.0 graceful, none broken
SOCIAL=runs/wide-dpo-social-rehearsed/final       # social pairs + rehearsal: the social rows
CONTROL=runs/wide-dpo-chatframes/final            # beta 0.1, the control
REHEARSED=runs/wide-dpo-rehearsed/final
SOCIAL05=runs/wide-dpo-social-b05/final
SOCIAL_R05=runs/wide-dpo-social-rehearsed-b05/final
SUMS=runs/wide-sft-sumframes/final                # the twenty-fourth SFT: subtraction 83.0

make() {     # make NAME merge-arguments...: runs/merge-NAME, unless it is there
  local out=runs/merge-$1
  shift
  [ -d "$out" ] || $T merge "$@" --out "$out"
}

measure() {  # the chat measures of a model, into runs/measures/NAME
  local ckpt=$1 into=runs/measures/$2
  mkdir -p "$into"
  [ -f "$into/wording.txt" ] || { $T eval --ckpt "$ckpt" --task wording --n 200 \
      --json "$into/wording.json" > "$into/wording.txt.part" && mv "$into/wording.txt.part" \
      "$into/wording.txt"; }
  [ -f "$into/all.txt" ] || { $T eval --ckpt "$ckpt" --task all,safety --chat --shots 0 \
      --n 200 --json "$into/all.json" > "$into/all.txt.part" && mv "$into/all.txt.part" \
      "$into/all.txt"; }
}

# 1. half of each: the beta-0.5 DPO and the social one
make soup-b05-social --ckpt $B05 --ckpt $SOCIAL
# 2. both fine-tunings added in full to the SFT (task arithmetic)
make sum-b05-social --base $SFT --ckpt $B05 --weight 1 --ckpt $SOCIAL --weight 1
# 3. the soup of the five DPOs that share the SFT and its pairs' kinds
make soup-five --ckpt $CONTROL --ckpt $B05 --ckpt $SOCIAL05 --ckpt $REHEARSED --ckpt $SOCIAL
# 4. half of the social DPO: the SFT's memory and sums back?
make half-social --base $SFT --ckpt $SOCIAL --weight 0.5
# 5. the soup of the two SFTs: the sum grammar's subtraction with the chat grammar's rows?
make soup-sfts --ckpt $SUMS --ckpt $SFT
# 6. the DPO's change moved onto that soup: θ = soup + (DPO − SFT)
make soup-sfts-dpo --ckpt $SUMS --weight 0.5 --ckpt $SFT --weight -0.5 --ckpt $SOCIAL_R05 \
    --weight 1
for name in soup-b05-social sum-b05-social soup-five half-social soup-sfts soup-sfts-dpo; do
  measure runs/merge-$name merge-$name
done
echo "merges done: runs/measures/merge-*"
