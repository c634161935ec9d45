#!/usr/bin/env bash
# build_mmcv.sh - build the mmcv wheel with compiled ops from mmcv's source archive, against the installed torch.
#
#   bash build_mmcv.sh SDIST OUT_DIR      SDIST: mmcv-<version>.tar.gz; the wheel lands in OUT_DIR
#
# The one build recipe of the project: install.sh calls it on a cluster or CI machine, and
# benchmarks/device_setup.sh on a GPU machine without internet. Needs no index (no build isolation, no deps).
#
# Environment:
#   PYTHON                 interpreter whose torch the ops are built against (default: python3)
#   MAX_JOBS               parallel compile jobs (default: 2)
#   FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST   CUDA ops (mmcv's own switches); without them, what torch.cuda finds
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bash build_mmcv.sh SDIST OUT_DIR" >&2; exit 2; }
SDIST=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
PY="${PYTHON:-python3}"
SRC_ROOT=$(mktemp -d -t mmcv-src.XXXXXX)
trap 'rm -rf "$SRC_ROOT"' EXIT
tar -xzf "$SDIST" -C "$SRC_ROOT"
SRC=$(find "$SRC_ROOT" -mindepth 1 -maxdepth 1 -type d -name 'mmcv-*' | head -n1)
[ -n "$SRC" ] || { echo "build_mmcv.sh: $SDIST holds no mmcv-* folder" >&2; exit 1; }
# torch >= 2.14's ATen headers require C++20; mmcv 2.1.0 hard-codes -std=c++17 (C++20 is fine for older torch too).
sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
if ! grep -q -- '-std=c++20' "$SRC/setup.py" || grep -q -- '-std=c++17' "$SRC/setup.py"; then
  echo "build_mmcv.sh: patching mmcv's setup.py (-std=c++17 -> -std=c++20) failed" >&2; exit 1
fi
# Python's CFLAGS (-DNDEBUG -O3 ...) plus -g0: no debug info, smaller objects, faster to compile. A CFLAGS variable
# replaces Python's flags in setuptools' distutils (it would drop -O3 and -DNDEBUG), so start from them.
CFLAGS="${CFLAGS:-$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS") or "")')} -g0"
echo "build_mmcv.sh: building $(basename "$SRC") with MMCV_WITH_OPS=1, MAX_JOBS=${MAX_JOBS:-2}, CFLAGS=$CFLAGS"
# Console scripts of this interpreter (ninja) must be on PATH: without ninja torch compiles one file at a time.
PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
( cd "$SRC" && PATH="$PATH" MMCV_WITH_OPS=1 CFLAGS="$CFLAGS" MAX_JOBS="${MAX_JOBS:-2}" \
    "$PY" -m pip wheel -v --no-index --no-deps --no-build-isolation -w "$OUT" . )
ls "$OUT"/mmcv-*.whl >/dev/null
