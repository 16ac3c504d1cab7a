#!/usr/bin/env bash
# The GPU check, one call from the repository root of a machine with no network:
#   bash scripts/gpu_check.sh                    # CUDA: install, train (GPU profile), evaluate,
#                                                # predict, export, speed bench fp32 vs AMP
#   bash scripts/gpu_check.sh --device cpu --no-install --tiny   # the same steps in seconds (tests)
# Installs booksegm over the machine's own torch (pip install --no-deps -e .) and its other
# dependencies from wheelhouse/ (downloaded beforehand; docs/configuration.md, "Checking a GPU machine"). Figures go to stdout and,
# with the log of every step, to $OUT (or outputs/gpu_check) as figures.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda install=1 tiny=0 steps=300
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;  # cuda | cpu
    --no-install) install=0; shift ;;  # booksegm is installed already (the test, a dev checkout)
    --tiny) tiny=1; shift ;;           # toy sizes: resnet18, 128x96 images, a few steps
    --steps) steps="$2"; shift 2 ;;    # training steps of the smoke run
    *) echo "gpu_check.sh: unknown argument $1 (--device cuda|cpu, --no-install, --tiny, --steps N)" >&2; exit 2 ;;
  esac
done
out="${OUT:-outputs/gpu_check}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
export BOOKSEGM_ROOT="$work" BOOKSEGM_CACHE="$work/cache" HYDRA_FULL_ERROR=1
figures="$out/figures.txt"
: > "$figures"
figure() { echo "$*" | tee -a "$figures"; }
step() { echo "== $1" >&2; shift; "$@" > >(tee -a "$out/gpu_check.log") 2> >(tee -a "$out/gpu_check.log" >&2); }

if [ "$install" = 1 ]; then
  [ -d wheelhouse ] || { echo "gpu_check.sh: no wheelhouse/ (docs/configuration.md, "Checking a GPU machine": pip download ...) and no --no-install" >&2; exit 2; }
  # pip takes what the machine has (torch, lightning, numpy, opencv...) and the rest from wheelhouse/
  step install python -m pip install --no-index --find-links wheelhouse hydra-core omegaconf albumentations pycocotools shapely
  step install python -m pip install --no-index --find-links wheelhouse --no-deps -e .
fi
figure "gpu_check: device $device, $(python -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")')"

if [ "$tiny" = 1 ]; then
  sizes=(data.synthetic.num_images=8 data.synthetic.width=128 data.synthetic.height=96 data.batch_size=2
         data.val_batch_size=2 data.num_workers=0 data.val_fraction=0.25 model.backbone=resnet18
         model.rpn_pre_nms_top_n_train=100 model.rpn_post_nms_top_n_train=50 model.rpn_pre_nms_top_n_test=50
         model.rpn_post_nms_top_n_test=20 model.box_batch_size_per_image=16 model.box_detections_per_img=10
         trainer.check_val_every_n_epoch=1)
  bench=(--steps 1 --warmup-steps 0 --num-images 2 --image-size 128 --batch-size 2 --backbone resnet18)
else  # the GPU profile as it is, on a smaller set so the check renders it in about a minute
  sizes=(data.synthetic.num_images=240)
  bench=(--steps 30 --num-images 64 --image-size 640 --batch-size 8)
fi
accelerator=$([ "$device" = cpu ] && echo cpu || echo gpu)
step train python -m booksegm.train "profile=$([ "$device" = cpu ] && echo cpu || echo gpu)" "${sizes[@]}" \
  "trainer.accelerator=$accelerator" "+trainer.max_steps=$steps" trainer.max_epochs=-1 "hydra.run.dir=$work/train"
python - "$work/train/metrics.json" "$steps" <<'PY' | tee -a "$figures"
import json, sys
m = json.load(open(sys.argv[1]))
print(f"train: {sys.argv[2]} steps in {m['wall_time_s']} s (render, validation and start-up included), {m['epochs']} epochs")
PY
ckpt="$work/train/checkpoints/last.ckpt"

step evaluate python -m booksegm.evaluate "ckpt_path=$ckpt" "device=$device" "hydra.run.dir=$work/evaluate"
grep -hE "^AP +[0-9n]" "$out/gpu_check.log" | tail -1 | sed 's/^AP */evaluate: COCO AP mask, box /' | tee -a "$figures"

mkdir -p "$work/photos"
find "$work/cache" -name '*.jpg' | sort | head -4 | xargs -I{} cp {} "$work/photos/"
start=$(date +%s.%N)
step predict python -m booksegm.predict "ckpt_path=$ckpt" "input=$work/photos" "device=$device" \
  "output_dir=$work/predicted" formats=[overlay,coco] "hydra.run.dir=$work/predict"
figure "predict: 4 photos in $(python -c "import time; print(round(time.time() - $start, 1))") s (process start-up included)"

step export python -m booksegm.export "ckpt_path=$ckpt" format=torchscript timing_runs=1 "hydra.run.dir=$work/export"
grep -h "inference on" "$out/gpu_check.log" | tail -1 | sed 's/^ */export: /' | tee -a "$figures"

step bench-fp32 python -m booksegm.bench speed --device "$device" "${bench[@]}"
grep -h "^train \|^predict " "$out/gpu_check.log" | tail -3 | sed 's/^/bench fp32: /' | tee -a "$figures"
if [ "$device" = cpu ]; then
  figure "bench AMP: skipped (--amp needs CUDA)"
else
  step bench-amp python -m booksegm.bench speed --device "$device" --amp "${bench[@]}"
  grep -h "^train \|^predict " "$out/gpu_check.log" | tail -3 | sed 's/^/bench AMP: /' | tee -a "$figures"
fi
figure "gpu_check: done"
