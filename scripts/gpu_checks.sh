#!/usr/bin/env bash
# Every GPU check in one prepared run, for a machine with one NVIDIA GPU and the machine's own
# PyTorch (the device tool's H200: torch 2.11 cu130, no faiss, no network). CI never runs it.
#
#   1. five 5-minute SimCLR trainings on Fashion-MNIST side by side on the one GPU (the CUDA
#      defaults, and small_cnn candidates), scored by scripts/eval_image_encoder.py, plus
#      OpenMoji at the CUDA defaults (issue 14: kNN >= 0.92 within 5 minutes);
#   2. tests/test_vision_cuda.py (every method on CUDA, the 224 px photo rule);
#   3. embedding throughput: ResNet-18 at 224 px colour and small_cnn at 28 px gray against the
#      pure forward pass (issues 14 and 20);
#   4. the item index on faiss-gpu at 10^6 items against the CPU index (issue 12);
#   5. (stage "solo") the CUDA defaults alone on the GPU for 5 minutes, the issue's own check,
#      with the faiss-gpu stage beside it (its CPU work does not touch the GPU for long).
#
# STAGES picks what runs (default "shared tests forward faiss"; the second run of
# benchmarks/RESULTS.md was STAGES=solo).
#
# Inputs under .device/ (ignored by git, carried by the device tool): fmnist/*-ubyte.xz (the
# Debian package's files, recompressed to travel), openmoji.tar.xz (`recsys datasets prepare
# openmoji`), faissgpu.tar.xz (faiss-gpu-cu12's wheel, its libfaiss pointed at the machine's
# cuBLAS 13 with patchelf, and the CUDA 12 runtime). Everything written goes to /tmp/gc and is
# packed into $OUT/gpu_checks.tar.gz every 30 s and at the end.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-var/gpu-checks}
GC=/tmp/gc
mkdir -p "$OUT" "$GC"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
pack() { tar -czf "$OUT/gpu_checks.tar.gz" -C /tmp gc 2>/dev/null; }
(while sleep 30; do pack; done) &
packer=$!
stamp() { echo "[$(date +%T) +$((SECONDS))s] $*" | tee -a "$GC/timeline.txt"; }

stamp "unpacking inputs"
mkdir -p /tmp/fmnist /tmp/faissgpu
for f in .device/fmnist/*.xz; do xz -dc "$f" | gzip -1 >"/tmp/fmnist/$(basename "$f" .xz).gz"; done
tar -xJf .device/openmoji.tar.xz -C /tmp
tar -xJf .device/faissgpu.tar.xz -C /tmp/faissgpu
nvidia-smi >"$GC/nvidia-smi.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$GC/torch.txt"
STAGES=${STAGES:-shared tests forward faiss}
EVAL="python3 scripts/eval_image_encoder.py --device cuda --time-budget 300 --no-progress"
FM="--dataset fashion-mnist --data-dir /tmp/fmnist"

faiss_bench() {
  CUBLAS=$(find /opt /usr/local /usr/lib -name 'libcublas.so.13*' 2>/dev/null | head -1)
  stamp "faiss-gpu index; cuBLAS 13 at ${CUBLAS:-nowhere}"
  LD_LIBRARY_PATH=/tmp/faissgpu/nvidia/cuda_runtime/lib:$(dirname "${CUBLAS:-/x/y}"):${LD_LIBRARY_PATH:-} \
    PYTHONPATH=$PWD:/tmp/faissgpu OMP_NUM_THREADS=12 timeout "$1" python3 scripts/bench_index_gpu.py \
    --items 1000000 --dims 128 --queries 10000 --single 200 --json "$GC/index_gpu.json" \
    >"$GC/index_gpu.log" 2>&1
  stamp "faiss exit $?"
  grep -E '^\{|faiss|GPUs|Error|error' "$GC/index_gpu.log" | tail -12
}

if [[ $STAGES == *solo* ]]; then
  stamp "the CUDA defaults alone, 5 minutes, faiss-gpu beside it"
  timeout 380 $EVAL $FM --no-baselines --json "$GC/fm_solo_defaults.json" >"$GC/fm_solo_defaults.log" 2>&1 &
  solo=$!
  sleep 20  # data loaded and training started before faiss takes CPU cores
  faiss_bench 150
  wait $solo
  stamp "solo done"
  grep -E "^(raw|random|simclr)|input .* px" "$GC/fm_solo_defaults.log"
fi
if [[ $STAGES != *shared* ]]; then
  kill "$packer" 2>/dev/null
  pack
  stamp "done"
  exit 0
fi

# 1. Trainings, side by side (each its own process; the GPU is shared, so each figure is what
#    a fifth of the GPU reached in 5 minutes).
declare -A RUNS=(
  [fm_defaults]="$FM --no-baselines"
  [fm_cnn32]="$FM --backbone small_cnn --width 32 --baselines"
  [fm_cnn64]="$FM --backbone small_cnn --width 64 --no-baselines"
  [fm_cnn64_b512]="$FM --backbone small_cnn --width 64 --batch-size 512 --lr 3e-3 --no-baselines"
  [fm_cnn64_v28]="$FM --backbone small_cnn --width 64 --train-size 28 --no-baselines"
  [om_defaults]="--dataset openmoji --data-dir /tmp/openmoji"
)
stamp "starting ${#RUNS[@]} trainings"
pids=()
for name in "${!RUNS[@]}"; do
  # shellcheck disable=SC2086
  timeout 470 $EVAL ${RUNS[$name]} --json "$GC/$name.json" >"$GC/$name.log" 2>&1 &
  pids+=($!)
done

# 2. CUDA tests (no conftest: it needs the catalog's database packages, absent there).
stamp "tests/test_vision_cuda.py"
timeout 150 python3 -m pytest --noconftest -q -p no:cacheprovider tests/test_vision_cuda.py \
  >"$GC/pytest_cuda.log" 2>&1
stamp "pytest exit $?: $(tail -1 "$GC/pytest_cuda.log")"
wait "${pids[@]}"
stamp "trainings done"
for name in "${!RUNS[@]}"; do
  echo "== $name"; grep -E "^(raw|random|simclr|byol|dino)|input .* px" "$GC/$name.log"
done | tee "$GC/summary.txt"

# 3. Embedding throughput, alone on the GPU.
stamp "embedding throughput"
timeout 50 python3 scripts/bench_image_training.py --forward --device cuda --backbones resnet18 \
  --size 224 --channels 3 --forward-images 20000 --steps 20 --json "$GC/forward_224.json" \
  2>&1 | tee "$GC/forward.log"
timeout 30 python3 scripts/bench_image_training.py --forward --device cuda --backbones small_cnn \
  --size 28 --channels 1 --forward-images 200000 --steps 50 --json "$GC/forward_28.json" \
  2>&1 | tee -a "$GC/forward.log"

# 4. faiss-gpu at 10^6 items.
faiss_bench 120
kill "$packer" 2>/dev/null
pack
stamp "done"
