#!/usr/bin/env bash
# The paper's experiment at full scale, from download to VOC 2012 val scores
# (and a test-server archive): the commands of docs/REPRODUCE.md, which
# explains each step, its time, memory and disk. Each step is logged with its
# start, end and output to runs/reproduce/<date-time>.log; the first failure
# stops the run, and a rerun with --from N continues (the tools resume).
#
# Usage: experiments/reproduce.sh [options]
#   --dry-run         print the steps' commands, run nothing
#   --from N          first step to run (default 1)
#   --to N            last step to run (default 9)
#   --gpu N           GPU id for training, statistics and inference (default 0)
#   --workers N       dataset-building processes (default 8)
#   --recipe R        release (default: what produced the paper's numbers) or paper
#                     (its text taken literally); docs/REPRODUCE.md, "Paper and release"
#   --lr-policy P     override the recipe's: step (the authors' solvers) or plateau
#   --test-images D   VOC 2012 test JPEGImages folder: step 9 writes the submission
#
# Steps, numbered as in docs/REPRODUCE.md: 1 download, 2 crop datasets and
# proposal recall, 3 initial weights, 4 training (stage 1 then 2), 5
# BatchNorm statistics and folding, 6 FCN-8s (the 2014 model of step 1:
# nothing to run), 7 inference (DeconvNet, + CRF, EDeconvNet + CRF), 8 evaluation on val,
# 9 test-server submission.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

dry=0 from=1 to=9 gpu=0 workers=8 recipe=release policy="" test_images=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --from) from="$2"; shift ;;
    --to) to="$2"; shift ;;
    --gpu) gpu="$2"; shift ;;
    --workers) workers="$2"; shift ;;
    --recipe) recipe="$2"; shift ;;
    --lr-policy) policy="$2"; shift ;;
    --test-images) test_images="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'  | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "reproduce: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-$ROOT/.venv/bin/python}
[ "$dry" = 1 ] || [ -x "$PY" ] || { echo "reproduce: no $PY; run bash scripts/setup.sh --use-cuda first" >&2; exit 1; }
log=runs/reproduce/$(date +%Y%m%d-%H%M%S).log
[ "$dry" = 1 ] || { mkdir -p "$(dirname "$log")"; echo "reproduce: logging to $log" >&2; }

VOC=data/VOCdevkit/VOC2012
SBD=data/benchmark_RELEASE/dataset
MODEL=models/deconvnet.caffemodel
# Inference runs the folded model of step 5: the same labels, 1.5x faster, and
# all 50 proposals in one batch (docs/BENCHMARKS.md, "Inference").
FOLDED=models/deconvnet_folded.caffemodel
DEPLOY=prototxt/deconvnet_deploy_folded.prototxt
FCN=models/fcn-8s-pascal.caffemodel
case "$recipe" in
  release) SOLVERS=prototxt ;;
  paper) SOLVERS=prototxt/paper ;;  # batch 64 per pass: written in step 4
  *) echo "reproduce: --recipe must be release or paper, not '$recipe'" >&2; exit 2 ;;
esac
POLICY=()
[ -z "$policy" ] || POLICY=(--lr-policy "$policy")

note() { if [ "$dry" = 1 ]; then echo "$*"; else echo "$(date '+%F %T') $*" | tee -a "$log" >&2; fi; }
run() {
  if [ "$dry" = 1 ]; then echo "+ $*"; return; fi
  note "+ $*"
  "$@" 2>&1 | tee -a "$log"
}
step() {  # step N TITLE: true when step N is in --from..--to
  [ "$1" -ge "$from" ] && [ "$1" -le "$to" ] || return 1
  note "== step $1: $2"
}

if step 1 "download and verify VOC 2012, SBD, VGG16, the 2014 FCN-8s and the structured-edge model"; then
  run "$PY" tools/download.py voc2012 sbd vgg16 fcn8s-pascal-2014 sed-model --extract
fi
if step 2 "stage-1 and stage-2 crop datasets, and the proposals' recall"; then
  for stage in 1 2; do
    run "$PY" data_prep/build_dataset.py --stage "$stage" --voc "$VOC" --sbd "$SBD" --recipe "$recipe" \
      --out "data/lmdb/stage${stage}_train" --workers "$workers"
    run "$PY" data_prep/build_dataset.py --stage "$stage" --voc "$VOC" --image-set voc:val --no-balance \
      --recipe "$recipe" --out "data/lmdb/stage${stage}_test" --workers "$workers"
  done
  run "$PY" data_prep/dataset_stats.py data/lmdb/stage2_train --plot runs/stage2_hist.png --sheet runs/stage2_sheet.png
  run "$PY" tools/proposal_recall.py --voc "$VOC" --split val --recipe "$recipe" --json runs/proposal_recall.json
fi
if step 3 "initial weights from VGG16"; then
  run "$PY" tools/init_weights.py deconvnet
fi
if step 4 "training, stage 1 then stage 2"; then
  [ "$recipe" = release ] || run "$PY" tools/make_prototxt.py --recipe "$recipe"
  run "$PY" tools/train.py --stage both --weights models/deconvnet_init_vgg16.caffemodel --gpu "$gpu" \
    --recipe "$recipe" "${POLICY[@]}" --solver1 "$SOLVERS/stage1_solver.prototxt" \
    --solver2 "$SOLVERS/stage2_solver.prototxt" --run-dir runs/train
  run "$PY" tools/plot_training.py runs/train/stage1/log.jsonl runs/train/stage2/log.jsonl --out runs/plots
fi
if step 5 "BatchNorm statistics over 500 training batches, then folded into the convolutions"; then
  run "$PY" tools/bn_stats.py --model prototxt/deconvnet_stage2_train.prototxt \
    --weights runs/train/stage2/snapshot_iter_40000.caffemodel --batches 500 --gpu "$gpu" --out "$MODEL"
  run "$PY" tools/fold_bn.py --weights "$MODEL" --out-model models/deconvnet_deploy_folded.prototxt \
    --out-weights "$FOLDED"
fi
if step 6 "FCN-8s"; then
  note "the 2014 FCN-8s PASCAL model from step 1 is used as it is (docs/REPRODUCE.md, step 6)"
fi
if step 7 "inference on VOC 2012 val: DeconvNet, + CRF, EDeconvNet + CRF"; then
  run "$PY" tools/infer.py --voc-root "$VOC" --split val --model "$DEPLOY" --weights "$FOLDED" --gpu "$gpu" --recipe "$recipe" \
    --out output/val_deconvnet
  run "$PY" tools/infer.py --voc-root "$VOC" --split val --model "$DEPLOY" --weights "$FOLDED" --gpu "$gpu" --recipe "$recipe" \
    --crf --out output/val_deconvnet_crf
  run "$PY" tools/infer.py --voc-root "$VOC" --split val --model "$DEPLOY" --weights "$FOLDED" --gpu "$gpu" --recipe "$recipe" \
    --crf --fcn-weights "$FCN" --out output/val_edeconvnet_crf
fi
if step 8 "scores on VOC 2012 val"; then
  for run_name in deconvnet deconvnet_crf edeconvnet_crf; do
    run "$PY" tools/eval_voc.py --gt-dir "$VOC/SegmentationClass" --pred-dir "output/val_$run_name/labels" \
      --list "$VOC/ImageSets/Segmentation/val.txt" --name "$run_name" --compare-paper \
      --json "output/val_$run_name/scores.json"
  done
fi
if step 9 "VOC 2012 test-server submission"; then
  if [ -z "$test_images" ]; then
    note "no --test-images: skipped (the test images come from the evaluation server)"
  else
    run "$PY" tools/infer.py "$test_images" --model "$DEPLOY" --weights "$FOLDED" --gpu "$gpu" --recipe "$recipe" --crf \
      --fcn-weights "$FCN" --voc-submission --out output/test
  fi
fi
note "done: steps $from to $to"
