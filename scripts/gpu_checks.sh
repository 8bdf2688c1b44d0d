#!/usr/bin/env bash
# Every GPU check in one prepared run, for a machine with one NVIDIA GPU and the machine's own
# PyTorch (the device tool's H200: torch 2.11 cu130, no faiss, no network). CI never runs it.
#
# Stages (STAGES picks them and their order; the default is "tests forward solo+faiss"):
#   tests    tests/test_vision_cuda.py: every method on CUDA, the 224 px photo rule, and the
#            pinned double-buffered embedding against the CPU's vectors;
#   forward  embedding throughput (`embed_tensor`, what `embed-images` runs after decoding)
#            against the pure forward pass: ResNet-18 at 224 px colour and small_cnn at 28 px
#            gray (issues 14 and 20), and the training rate of the Fashion-MNIST recipe;
#   faiss    the item index on faiss-gpu at 10^6 items against the CPU index (issue 12);
#   solo     Fashion-MNIST at the CUDA defaults, alone on the GPU, 5 minutes of training
#            (issue 14's check: kNN >= 0.92); "solo+faiss" runs the faiss stage beside it, 30 s
#            in (the index benchmark is mostly CPU work; the GPU is its for a few seconds);
#   shared   (session 6) five Fashion-MNIST recipes and OpenMoji side by side, 5 minutes each.
#
# Inputs under .device/ (ignored by git, carried by the device tool): fmnist/*-ubyte.xz (the
# Debian package's files, recompressed to travel), faissgpu-sm90.tar.xz (scripts/device/README.md:
# faiss-gpu 1.15.1's wheel with only its sm_90 code, pointed at the machine's cuBLAS 13, and the
# CUDA 12 runtime), and for "shared" openmoji.tar.xz (`recsys datasets prepare openmoji`). Everything written goes to /tmp/gc and
# is packed into $OUT/gpu_checks.tar.gz every 30 s and at the end.
#
# A dry run on a CPU: DEVICE=cpu BUDGET=5 FAISS_ITEMS=20000 FWD224=64 FWD28=2000 PY=.venv/bin/python \
#   bash scripts/gpu_checks.sh
#
# Usage: bash scripts/gpu_checks.sh [-h|--help]; it takes no arguments, only these variables:
#   STAGES (above), DEVICE (cuda), BUDGET (300 s of training),
#   FAISS_ITEMS (1000000), FWD224 (20000), FWD28 (200000), PY (python3), OUT (var/gpu-checks).
set -u
case "${1-}" in
  -h | --help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
  "") ;;
  *) echo "gpu_checks.sh: unknown argument '$1': it takes none (settings are variables; -h)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
OUT=${OUT:-var/gpu-checks}
GC=/tmp/gc
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-300}
FAISS_ITEMS=${FAISS_ITEMS:-1000000}
FWD224=${FWD224:-20000}  # images embedded per forward benchmark
FWD28=${FWD28:-200000}
mkdir -p "$OUT" "$GC"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
pack() { tar -czf "$OUT/gpu_checks.tar.gz" -C /tmp gc 2>/dev/null; }
(while sleep 30; do pack; done) &
packer=$!
stamp() { echo "[$(date +%T) +$((SECONDS))s] $*" | tee -a "$GC/timeline.txt"; }
PY=${PY:-python3}

stamp "unpacking inputs"
mkdir -p /tmp/fmnist /tmp/faissgpu
for f in .device/fmnist/*.xz; do xz -dc "$f" | gzip -1 >"/tmp/fmnist/$(basename "$f" .xz).gz"; done
[[ -f .device/faissgpu-sm90.tar.xz ]] && tar -xJf .device/faissgpu-sm90.tar.xz -C /tmp/faissgpu
nvidia-smi >"$GC/nvidia-smi.txt" 2>&1
$PY -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))" \
  | tee "$GC/torch.txt"
STAGES=${STAGES:-tests forward solo+faiss}
EVAL="$PY scripts/eval_image_encoder.py --device $DEVICE --time-budget $BUDGET --no-progress"
FM="--dataset fashion-mnist --data-dir /tmp/fmnist"
BENCH="$PY scripts/bench_image_training.py --device $DEVICE"

faiss_bench() {
  CUBLAS=$(find /opt /usr/local /usr/lib -name 'libcublas.so.13*' 2>/dev/null | head -1)
  stamp "faiss-gpu index at $FAISS_ITEMS items; cuBLAS 13 at ${CUBLAS:-nowhere}"
  LD_LIBRARY_PATH=/tmp/faissgpu/nvidia/cuda_runtime/lib:$(dirname "${CUBLAS:-/x/y}"):${LD_LIBRARY_PATH:-} \
    PYTHONPATH=$PWD:/tmp/faissgpu OMP_NUM_THREADS=8 timeout 200 $PY scripts/bench_index_gpu.py \
    --items "$FAISS_ITEMS" --dims 128 --queries 10000 --single 200 --json "$GC/index_gpu.json" \
    >"$GC/index_gpu.log" 2>&1
  stamp "faiss exit $?"
  grep -E '^\{|faiss|GPUs|Error|error' "$GC/index_gpu.log" | tail -12
}

for stage in $STAGES; do
  case $stage in
  tests)
    # No conftest: it needs the catalog's database packages, absent there.
    stamp "tests/test_vision_cuda.py"
    timeout 150 $PY -m pytest --noconftest -q -p no:cacheprovider tests/test_vision_cuda.py \
      >"$GC/pytest_cuda.log" 2>&1
    stamp "pytest exit $?: $(tail -1 "$GC/pytest_cuda.log")"
    ;;
  forward)
    stamp "embedding throughput and training rate"
    timeout 60 $BENCH --forward --backbones resnet18 --size 224 --channels 3 \
      --forward-images "$FWD224" --steps 20 --json "$GC/forward_224.json" 2>&1 | tee "$GC/forward.log"
    timeout 40 $BENCH --forward --backbones small_cnn --width 64 --size 28 --channels 1 \
      --forward-images "$FWD28" --steps 50 --json "$GC/forward_28.json" 2>&1 | tee -a "$GC/forward.log"
    timeout 60 $BENCH --methods simclr,byol,dino --backbones small_cnn --width 64 --size 20 \
      --data-dir /tmp/fmnist --json "$GC/train_rate.json" 2>&1 | tee "$GC/train_rate.log"
    ;;
  faiss) faiss_bench ;;
  solo | solo+faiss)
    stamp "Fashion-MNIST at the CUDA defaults, $BUDGET s (${stage})"
    timeout $((BUDGET + 90)) $EVAL $FM --no-baselines --json "$GC/fm_solo_defaults.json" \
      >"$GC/fm_solo_defaults.log" 2>&1 &
    solo=$!
    if [[ $stage == solo+faiss ]]; then
      sleep 30  # training under way before the index benchmark takes CPU cores
      faiss_bench
    fi
    wait $solo
    stamp "solo exit $?"
    grep -E "^(raw|random|simclr)|input .* px|epochs" "$GC/fm_solo_defaults.log" | tail -8
    ;;
  shared)
    tar -xJf .device/openmoji.tar.xz -C /tmp
    declare -A RUNS=(
      [fm_defaults]="$FM --no-baselines"
      [fm_cnn32]="$FM --backbone small_cnn --width 32 --baselines"
      [fm_cnn64]="$FM --backbone small_cnn --width 64 --no-baselines"
      [fm_cnn64_b512]="$FM --backbone small_cnn --width 64 --batch-size 512 --lr 3e-3 --no-baselines"
      [fm_cnn64_v28]="$FM --backbone small_cnn --width 64 --train-size 28 --no-baselines"
      [om_defaults]="--dataset openmoji --data-dir /tmp/openmoji"
    )
    stamp "starting ${#RUNS[@]} trainings side by side"
    pids=()
    for name in "${!RUNS[@]}"; do
      # shellcheck disable=SC2086
      timeout $((BUDGET + 170)) $EVAL ${RUNS[$name]} --json "$GC/$name.json" >"$GC/$name.log" 2>&1 &
      pids+=($!)
    done
    wait "${pids[@]}"
    for name in "${!RUNS[@]}"; do
      echo "== $name"; grep -E "^(raw|random|simclr|byol|dino)|input .* px" "$GC/$name.log"
    done | tee "$GC/summary.txt"
    ;;
  *) stamp "unknown stage $stage" ;;
  esac
done
kill "$packer" 2>/dev/null
pack
stamp "done"
