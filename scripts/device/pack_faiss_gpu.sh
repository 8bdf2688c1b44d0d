#!/usr/bin/env bash
# Builds .device/faissgpu-sm90.tar.xz (or the path given as $1): faiss-gpu carried to the device
# machine (one H200, no network, the machine's PyTorch; its only cuBLAS is CUDA 13's), where
# scripts/gpu_checks.sh's faiss stage unpacks it into /tmp/faissgpu and imports it with
# PYTHONPATH=/tmp/faissgpu and LD_LIBRARY_PATH=/tmp/faissgpu/nvidia/cuda_runtime/lib:<cuBLAS 13 dir>.
#
# From the official wheels faiss-gpu 1.15.1 (CUDA 12 build) and nvidia-cuda-runtime-cu12 12.9.79:
#   faiss/, faiss_gpu.libs/ and nvidia/cuda_runtime/lib/libcudart.so.12, with
#   - libfaiss.so re-pointed from libcublas*.so.12 to libcublas*.so.13 (retarget_cublas.py);
#   - libfaiss.so's .nv_fatbin cut to sm_90 machine code only (trim_fatbin.py 2:90): the full
#     wheel's GPU code does not fit the device tool's 64 MiB carry limit, sm_90 alone does (~19 MiB);
#   - faiss/loader.py: `from packaging.version import Version` made optional (the device Python
#     may lack packaging) with a small numeric fallback;
#   - faiss/__init__.py: the `_preload_gpu_libs()` call removed (it wants the nvidia-*-cu12 pip
#     packages; the libraries come from LD_LIBRARY_PATH instead).
# Needs: bash, a Python >= 3.11 with pip (PYTHON, default python3), network access to PyPI,
# unzip, tar and xz. pyelftools (not a project dependency) goes into a temporary directory.
# See scripts/device/README.md for the import check.
#
# Usage: bash scripts/device/pack_faiss_gpu.sh [-h|--help] [OUT.tar.xz]
#   OUT.tar.xz: the tarball written (default .device/faissgpu-sm90.tar.xz); a path starting
#   with - needs ./ before it.
set -euo pipefail
case "${1-}" in
  -h | --help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
  -*) echo "pack_faiss_gpu.sh: unknown option '$1' (an output path starting with - needs ./; -h for help)" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "pack_faiss_gpu.sh: one output path at most, not $# arguments (-h for help)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:-$here/../../.device/faissgpu-sm90.tar.xz}")
py=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$py" -m pip download -q -d "$tmp/whl" --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  faiss-gpu==1.15.1 nvidia-cuda-runtime-cu12==12.9.79
"$py" -m pip install -q --target "$tmp/pylib" --only-binary=:all: pyelftools==0.33
unzip -q "$tmp"/whl/faiss_gpu-1.15.1-*.whl 'faiss/*' 'faiss_gpu.libs/*' -d "$tmp/stage"
unzip -q "$tmp"/whl/nvidia_cuda_runtime_cu12-12.9.79-*.whl \
  nvidia/cuda_runtime/lib/libcudart.so.12 -d "$tmp/stage"

lib=$tmp/stage/faiss/libfaiss.so
log=$(PYTHONPATH=$tmp/pylib "$py" "$here/retarget_cublas.py" "$lib")
echo "$log"
grep -q 'libcublasLt.so.12 -> libcublasLt.so.13' <<<"$log" || { echo "cuBLAS not re-pointed" >&2; exit 1; }
PYTHONPATH=$tmp/pylib "$py" "$here/trim_fatbin.py" "$lib" 2:90

# The two Python edits: each old text must occur exactly once (or the edit be there already).
"$py" - "$tmp/stage/faiss" <<'PY'
import pathlib
import sys

EDITS = [
    ("loader.py", "\nfrom packaging.version import Version\n", r'''
try:
    from packaging.version import Version
except ImportError:  # packaging not installed: minimal numeric fallback
    def Version(v):
        import re
        return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])
'''),
    ("__init__.py", "\n_preload_gpu_libs()\n", """
# Repacked (faissgpu tarball): libfaiss.so was re-pointed to cuBLAS 13 and the
# nvidia-*-cu12 wheels are absent; libcudart.so.12 / libcublas*.so.13 are found
# through LD_LIBRARY_PATH by the dynamic loader, so the pip-wheel preload is skipped.
"""),
]
for name, old, new in EDITS:
    path = pathlib.Path(sys.argv[1], name)
    text = path.read_bytes().decode()
    if old not in text and text.count(new) == 1:
        print(f"{path}: already edited")
    elif text.count(old) == 1:
        path.write_bytes(text.replace(old, new).encode())
        print(f"{path}: edited")
    else:
        sys.exit(f"{path}: expected text not found exactly once: {old!r}")
PY

mkdir -p "$(dirname "$out")"
tar -C "$tmp/stage" --sort=name --owner=0 --group=0 --numeric-owner -cf - \
  faiss faiss_gpu.libs nvidia | xz -9 -T2 >"$tmp/out.tar.xz"
mv "$tmp/out.tar.xz" "$out"
ls -l "$out"
