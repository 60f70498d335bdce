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
#   --rehearsal DIR   the guide on stand-in inputs, on the CPU: tools/rehearsal_inputs.py
#                     writes them under DIR (the archives of step 1 packed as the real
#                     ones and unpacked by its code; random full-size VGG16 and 2014
#                     FCN-8s, a random structured-edge model), then steps 2 to 9
#                     run with DIR's data/, models/,
#                     prototxt/, runs/ and output/, the full network, and these
#                     overrides, each logged: batch 2 and iter_size 1, max_iter 2
#                     per stage, 2 BatchNorm batches, --top-k 3 on 2 val and
#                     2 test images, --edge-model DIR/models/sed_model.yml.gz,
#                     no --gpu
#
# Steps, numbered as in docs/REPRODUCE.md: 1 download, 2 crop datasets and
# proposal recall, 3 initial weights, 4 training (stage 1 then 2), 5
# BatchNorm statistics and folding, 6 FCN-8s (the 2014 model of step 1:
# nothing to run), 7 inference (DeconvNet, + CRF, EDeconvNet + CRF), 8 evaluation on val,
# 9 test-server submission.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

dry=0 from=1 to=9 gpu=0 workers=8 recipe=release policy="" test_images="" rehearsal=""
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
    --rehearsal) rehearsal="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'  | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "reproduce: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-$ROOT/.venv/bin/python}
[ "$dry" = 1 ] || [ -x "$PY" ] || { echo "reproduce: no $PY; run bash scripts/setup.sh --use-cuda first (bash scripts/setup.sh without a GPU)" >&2; exit 1; }
case "$recipe" in release|paper) ;; *) echo "reproduce: --recipe must be release or paper, not '$recipe'" >&2; exit 2 ;; esac

# Where each step reads and writes, relative to the repository root; a
# rehearsal moves them all under its folder.
DATA=data MODELS=models RUNS=runs OUTPUT=output PROTO=prototxt
STAGE2_ITERS=40000                # stage 2's max_iter in prototxt/stage2_solver.prototxt
GPU=(--gpu "$gpu")
RECIPE=()                         # the release recipe is every tool's default
[ "$recipe" = release ] || RECIPE=(--recipe "$recipe")
POLICY=()
[ -z "$policy" ] || POLICY=(--lr-policy "$policy")
# Rehearsal overrides, appended to the guide's commands (a later flag wins).
PROTO_OVR=() TRAIN_OVR=() STATS_OVR=() INFER_OVR=() EVAL_OVR=() EDGE_OVR=()
if [ -n "$rehearsal" ]; then
  R=$(realpath -m "$rehearsal")
  [ "$from" -gt 1 ] || from=2     # step 1's archives are the stand-in's
  DATA=$R/data MODELS=$R/models RUNS=$R/runs OUTPUT=$R/output PROTO=$R/prototxt
  STAGE2_ITERS=2 GPU=() workers=2
  [ -n "$test_images" ] || test_images=$DATA/VOC2012_test/JPEGImages
  PROTO_OVR=(--out "$PROTO" --root "$R" --batch-per-pass 2 --iter-size 1)
  TRAIN_OVR=(--max-iter "$STAGE2_ITERS")
  STATS_OVR=(--batches 2)
  INFER_OVR=(--top-k 3 --list "$R/rehearsal_val.txt")
  EVAL_OVR=(--list "$R/rehearsal_val.txt")
  # Step 1's structured-edge model: the tools' default is the repository's models/.
  EDGE_OVR=(--edge-model "$MODELS/sed_model.yml.gz")
fi
SOLVERS=$PROTO
[ "$recipe" = release ] || SOLVERS=$PROTO/$recipe   # batch 64 per pass: written in step 4
[ -z "$rehearsal" ] || SOLVERS=$PROTO            # the rehearsal writes its solvers there

VOC=$DATA/VOCdevkit/VOC2012
SBD=$DATA/benchmark_RELEASE/dataset
MODEL=$MODELS/deconvnet.caffemodel
# Inference runs the folded pair that step 5 writes: the same labels, 1.5x
# faster, and all 50 proposals in one batch (docs/BENCHMARKS.md, "Inference").
FOLDED=$MODELS/deconvnet_folded.caffemodel
DEPLOY=$MODELS/deconvnet_deploy_folded.prototxt
FCN=$MODELS/fcn-8s-pascal.caffemodel

log=$RUNS/reproduce/$(date +%Y%m%d-%H%M%S).log
[ "$dry" = 1 ] || { mkdir -p "$(dirname "$log")"; echo "reproduce: logging to $log" >&2; }

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

if [ -n "$rehearsal" ]; then
  note "rehearsal in $R: stand-in inputs, the full network on the CPU, and these overrides:"
  note "  step 4: tools/make_prototxt.py ${PROTO_OVR[*]} (batch 2: BatchNorm on the 1x1 maps of fc6 and fc7 needs two examples; iter_size 1); tools/train.py ${TRAIN_OVR[*]}"
  note "  step 5: tools/bn_stats.py ${STATS_OVR[*]}, stage 2's snapshot_iter_$STAGE2_ITERS"
  note "  step 7: tools/infer.py ${INFER_OVR[*]}; step 8: tools/eval_voc.py ${EVAL_OVR[*]}; step 9: --top-k 3"
  note "  steps 2 and 7 to 9: ${EDGE_OVR[*]} (stage-2 builds, recall, inference)"
  note "  every step: no --gpu; dataset workers $workers"
  run "$PY" tools/rehearsal_inputs.py "$R"
fi
if step 1 "download and verify VOC 2012, SBD, VGG16, the 2014 FCN-8s and the structured-edge model"; then
  run "$PY" tools/download.py voc2012 sbd vgg16 fcn8s-pascal-2014 sed-model --extract
fi
if step 2 "stage-1 and stage-2 crop datasets, and the proposals' recall"; then
  for stage in 1 2; do
    edges=()   # stage 1 crops around the instances: no proposals
    [ "$stage" = 1 ] || edges=("${EDGE_OVR[@]}")
    run "$PY" data_prep/build_dataset.py --stage "$stage" --voc "$VOC" --sbd "$SBD" "${RECIPE[@]}" \
      --out "$DATA/lmdb/stage${stage}_train" --workers "$workers" "${edges[@]}"
    run "$PY" data_prep/build_dataset.py --stage "$stage" --voc "$VOC" --image-set voc:val --no-balance \
      "${RECIPE[@]}" --out "$DATA/lmdb/stage${stage}_test" --workers "$workers" "${edges[@]}"
  done
  run "$PY" data_prep/dataset_stats.py "$DATA/lmdb/stage2_train" --plot "$RUNS/stage2_hist.png" \
    --sheet "$RUNS/stage2_sheet.png"
  run "$PY" tools/proposal_recall.py --voc "$VOC" --split val "${RECIPE[@]}" --json "$RUNS/proposal_recall.json" \
    "${EDGE_OVR[@]}"
fi
if step 3 "initial weights from VGG16"; then
  run "$PY" tools/init_weights.py deconvnet --vgg-model "$MODELS/VGG_ILSVRC_16_layers.caffemodel" \
    --out "$MODELS/deconvnet_init_vgg16.caffemodel"
fi
if step 4 "training, stage 1 then stage 2"; then
  if [ "$recipe" != release ] || [ -n "$rehearsal" ]; then
    run "$PY" tools/make_prototxt.py "${RECIPE[@]}" "${PROTO_OVR[@]}"
  fi
  run "$PY" tools/train.py --stage both --weights "$MODELS/deconvnet_init_vgg16.caffemodel" "${GPU[@]}" \
    "${RECIPE[@]}" "${POLICY[@]}" --solver1 "$SOLVERS/stage1_solver.prototxt" \
    --solver2 "$SOLVERS/stage2_solver.prototxt" --run-dir "$RUNS/train" "${TRAIN_OVR[@]}"
  run "$PY" tools/plot_training.py "$RUNS/train/stage1/log.jsonl" "$RUNS/train/stage2/log.jsonl" --out "$RUNS/plots"
fi
if step 5 "BatchNorm statistics over 500 training batches, then folded into the convolutions"; then
  run "$PY" tools/bn_stats.py --model "$SOLVERS/deconvnet_stage2_train.prototxt" \
    --weights "$RUNS/train/stage2/snapshot_iter_$STAGE2_ITERS.caffemodel" --batches 500 "${GPU[@]}" \
    --out "$MODEL" "${STATS_OVR[@]}"
  run "$PY" tools/fold_bn.py --weights "$MODEL" --out-model "$DEPLOY" --out-weights "$FOLDED"
fi
if step 6 "FCN-8s"; then
  note "the 2014 FCN-8s PASCAL model from step 1 is used as it is (docs/REPRODUCE.md, step 6)"
fi
if step 7 "inference on VOC 2012 val: DeconvNet, + CRF, EDeconvNet + CRF"; then
  run "$PY" tools/infer.py --voc-root "$VOC" --split val --model "$DEPLOY" --weights "$FOLDED" "${GPU[@]}" \
    "${RECIPE[@]}" --out "$OUTPUT/val_deconvnet" "${INFER_OVR[@]}" "${EDGE_OVR[@]}"
  run "$PY" tools/infer.py --voc-root "$VOC" --split val --model "$DEPLOY" --weights "$FOLDED" "${GPU[@]}" \
    "${RECIPE[@]}" --crf --out "$OUTPUT/val_deconvnet_crf" "${INFER_OVR[@]}" "${EDGE_OVR[@]}"
  run "$PY" tools/infer.py --voc-root "$VOC" --split val --model "$DEPLOY" --weights "$FOLDED" "${GPU[@]}" \
    "${RECIPE[@]}" --crf --fcn-weights "$FCN" --out "$OUTPUT/val_edeconvnet_crf" "${INFER_OVR[@]}" \
    "${EDGE_OVR[@]}"
fi
if step 8 "scores on VOC 2012 val"; then
  for run_name in deconvnet deconvnet_crf edeconvnet_crf; do
    run "$PY" tools/eval_voc.py --gt-dir "$VOC/SegmentationClass" --pred-dir "$OUTPUT/val_$run_name/labels" \
      --list "$VOC/ImageSets/Segmentation/val.txt" --name "$run_name" --compare-paper \
      --json "$OUTPUT/val_$run_name/scores.json" "${EVAL_OVR[@]}"
  done
fi
if step 9 "VOC 2012 test-server submission"; then
  if [ -z "$test_images" ]; then
    note "no --test-images: skipped (the test images come from the evaluation server)"
  else
    run "$PY" tools/infer.py "$test_images" --model "$DEPLOY" --weights "$FOLDED" "${GPU[@]}" "${RECIPE[@]}" --crf \
      --fcn-weights "$FCN" --voc-submission --out "$OUTPUT/test" "${INFER_OVR[@]:0:2}" "${EDGE_OVR[@]}"
  fi
fi
note "done: steps $from to $to"
