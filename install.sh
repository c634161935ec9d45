#!/usr/bin/env bash
# install.sh - install shardprep and everything it needs into the CURRENT Python interpreter.
#
#   bash install.sh           full install: runtime + model stack (torch, mmcv with ops, mmdet, mmpose,
#                             transformers, ...) + `pip install -e ".[test]"`
#   bash install.sh --core    runtime only (submitit, hydra, numpy, h5py, tqdm, pillow, scikit-image,
#                             pytest, ...) + the project
#   bash install.sh --rebuild-mmcv   ignore the cached mmcv wheel and build it again
#   bash install.sh --no-browser     skip Debian's chromium (the report's browser test then skips)
#
# It uses `${PYTHON:-python3} -m pip` of whatever environment is active (it creates no venv).
# Re-running it is quick: every step first checks what is already installed (versions, imports).
#
# Environment:
#   PYTHON            interpreter to install into (default: python3)
#   MAX_JOBS          parallel compile jobs for the mmcv build (default: 2)
#   XDG_CACHE_HOME    the built mmcv wheel is cached under ${XDG_CACHE_HOME:-$HOME/.cache}/shardprep/wheels/
#
# See docs/model-stack.md for why each pin is what it is.
set -Eeuo pipefail

# ----------------------------------------------------------------------------------------------------------
# Pins (keep in sync with docs/model-stack.md)
TORCH_PIN="2.14.1"            # works with torchvision 0.29.1; needs mmcv built with -std=c++20
TORCHVISION_PIN="0.29.1"
MMCV_PIN="2.1.0"              # mmdet 3.3.0 refuses mmcv >= 2.2.0
MMENGINE_PIN="0.10.7"
MMDET_PIN="3.3.0"
MMPOSE_PIN="1.3.2"
XTCOCOTOOLS_PIN="1.14.3"      # built from source: the PyPI wheel breaks under numpy 2
SETUPTOOLS_SPEC="setuptools>=77.0.3,<81"   # torch 2.14 wants >=77.0.3; mmcv's setup.py / mmengine need pkg_resources
NUMPY_SPEC="numpy>=2,<3"
OPENCV_SPEC="opencv-python-headless>=4.8,<5"
TRANSFORMERS_SPEC="transformers>=4.57,<6"  # has DepthAnythingForDepthEstimation (metric depth)

CORE_REQS=(
  "submitit>=1.5.1,<1.6"
  "hydra-core>=1.3.2,<1.4"
  "omegaconf>=2.3,<2.4"
  "numpy>=1.24"
  "h5py>=3.9"
  "hdf5plugin>=4.1"
  "tqdm>=4.60"
  "pillow>=9.0"
  "scikit-image>=0.21"
  "pytest>=7.4"
  "imageio-ffmpeg>=0.5"        # ships its own ffmpeg binary: mp4 encoding (events), frame extraction (convert)
  "cdflib>=1.3"                # pure-Python CDF reader: Human3.6M's pose files (convert); no C library to build
)
BUILD_REQS=("$SETUPTOOLS_SPEC" "wheel" "ninja" "cython>=3" "$NUMPY_SPEC")
# Runtime requirements of mmcv / mmengine / mmdet / mmpose, installed by hand because those four are
# installed with --no-deps: their metadata asks for opencv-python (GUI build, clashes with the headless one
# over the same cv2 package) and mmpose's for chumpy (does not build, cannot be imported on Python 3.11).
MM_REQS=(
  "$OPENCV_SPEC"
  "addict" "matplotlib" "pyyaml" "rich" "termcolor" "yapf" "packaging" "regex"  # mmengine, mmcv
  "pycocotools" "scipy" "shapely" "six" "terminaltables" "tqdm"                # mmdet
  "json_tricks" "munkres"                                                      # mmpose (+ xtcocotools)
)
EXTRA_REQS=(
  "$TRANSFORMERS_SPEC" "safetensors"
  "imageio"
)

# ----------------------------------------------------------------------------------------------------------
MODE=full
REBUILD_MMCV=0
BROWSER=1
for arg in "$@"; do
  case "$arg" in
    --core) MODE=core ;;
    --rebuild-mmcv) REBUILD_MMCV=1 ;;
    --no-browser) BROWSER=0 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
if ! PY_PATH="$(command -v "$PY")"; then
  echo "[install.sh] ERROR: '$PY' not found (set PYTHON=/path/to/python)" >&2; exit 1
fi
[[ "$PY_PATH" == /* ]] || PY_PATH="$PWD/$PY_PATH"
PY="$PY_PATH"
export MAX_JOBS="${MAX_JOBS:-2}"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/shardprep"
T0=$SECONDS
CHANGED=0
WORK="$(mktemp -d -t shardprep-install.XXXXXX)"
CONSTRAINTS="$WORK/constraints.txt"
: > "$CONSTRAINTS"

log()  { printf '[install.sh %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
step() { printf '\n[install.sh %4ds] ==== %s\n' "$((SECONDS - T0))" "$*"; }
die()  { printf '\n[install.sh] ERROR: %s\n' "$*" >&2; exit 1; }
on_err() {
  local rc=$? line=$1 cmd=$2
  printf '\n[install.sh] ERROR: command failed (exit %s) at line %s:\n    %s\n' "$rc" "$line" "$cmd" >&2
  printf '[install.sh] Nothing was rolled back; fix the cause and re-run (finished steps are skipped).\n' >&2
  exit "$rc"
}
trap 'on_err $LINENO "$BASH_COMMAND"' ERR
trap 'rm -rf "$WORK"' EXIT
# Run every check outside the checkout: the repo root holds folders such as datasets/ that would shadow
# installed packages of the same name (e.g. Hugging Face `datasets`, probed by transformers).
cd "$WORK"

# pip with our extra constraints (the ones in pip's own config files still apply as well), without the
# "Location ... is ignored" noise that find-links/extra-index pointing at missing folders produce.
pip_run() {
  local extra=()
  [ -t 1 ] || extra+=(--progress-bar off)
  "$PY" -m pip "$@" "${extra[@]}" 2>&1 \
    | { grep -v -e 'is ignored: it is neither a file nor a directory' || true; }
}
pip_install() { pip_run install -c "$CONSTRAINTS" "$@"; CHANGED=1; }

# Prints the requirements (args) that the current environment does NOT satisfy, one per line.
unsatisfied() {
  "$PY" - "$@" <<'EOF'
import sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
except ImportError:  # pip always vendors it
    from pip._vendor.packaging.requirements import Requirement
for spec in sys.argv[1:]:
    req = Requirement(spec)
    if req.marker is not None and not req.marker.evaluate():
        continue
    try:
        have = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        print(spec); continue
    if req.specifier and not req.specifier.contains(have, prereleases=True):
        print(spec)
EOF
}

# ensure LABEL [pip-args --] REQ...: install the requirements that are not satisfied yet.
ensure() {
  local label=$1; shift
  local args=()
  if [[ " $* " == *" -- "* ]]; then
    while [ "$1" != "--" ]; do args+=("$1"); shift; done
    shift
  fi
  local out missing=()
  out="$(unsatisfied "$@")" || die "$label: could not check the installed versions of: $*"
  [ -z "$out" ] || mapfile -t missing <<<"$out"
  if [ ${#missing[@]} -eq 0 ]; then
    log "$label: already satisfied"
  else
    log "$label: installing ${missing[*]}"
    pip_install "${args[@]}" "${missing[@]}"
  fi
}

# ----------------------------------------------------------------------------------------------------------
step "preflight"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
  || die "shardprep needs Python >= 3.10; '$PY' is $("$PY" -V 2>&1)"
"$PY" -m pip --version >/dev/null 2>&1 || die "'$PY -m pip' does not work; install pip for this interpreter first"
log "interpreter: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0], "prefix=" + sys.prefix)')"
log "pip: $("$PY" -m pip --version)"
if "$PY" -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) and sys.prefix == sys.base_prefix else 1)'; then
  [ -n "${PIP_BREAK_SYSTEM_PACKAGES:-}" ] || die "'$PY' is an externally managed system Python (PEP 668): activate a venv/conda env first (or set PIP_BREAK_SYSTEM_PACKAGES=1 if you really mean it)"
fi
log "mode: $MODE   repo: $REPO_DIR"
# Console scripts of this interpreter (ninja, cython, ...) must be found even when its env is not activated:
# without ninja on PATH torch's extension builder compiles mmcv one file at a time.
SCRIPTS_DIR="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
export PATH="$SCRIPTS_DIR:$PATH"

# ----------------------------------------------------------------------------------------------------------
step "core runtime"
ensure "core" "${CORE_REQS[@]}"

if [ "$MODE" = full ]; then
  command -v "${CXX:-g++}" >/dev/null || die "a C++ compiler (g++) is needed to build mmcv's ops and xtcocotools"

  # ------------------------------------------------------------------------------------------------------
  step "build tools ($SETUPTOOLS_SPEC, wheel, ninja, cython, numpy 2)"
  printf '%s\n' "$SETUPTOOLS_SPEC" "$NUMPY_SPEC" "$OPENCV_SPEC" >> "$CONSTRAINTS"
  ensure "build tools" "${BUILD_REQS[@]}"
  "$PY" -c 'import pkg_resources' 2>/dev/null || die "pkg_resources is not importable although $SETUPTOOLS_SPEC is installed"

  # ------------------------------------------------------------------------------------------------------
  # ------------------------------------------------------------------------------------------------------
  step "probe what is installed (one import pass)"
  # One interpreter start instead of one per check (importing torch alone takes seconds). Each answer is
  # printed as soon as it is known, so a crash late in the probe keeps the earlier ones.
  PROBE="$("$PY" - "$MMCV_PIN" "$XTCOCOTOOLS_PIN" <<'EOF' 2>/dev/null || true
import sys, warnings
warnings.simplefilter("ignore")
mmcv_pin, xtc_pin = sys.argv[1:3]
def say(*a):
    print(*a, flush=True)
try:
    import torch
except Exception:
    say("torch none"); raise SystemExit
boxes = torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]]); scores = torch.tensor([1., .5])
try:
    import torchvision, torchvision.ops
    torchvision.ops.nms(boxes, scores, .5)
    say("torch ok", torch.__version__, torchvision.__version__, torch.version.cuda or "none",
        "cuda" if torch.cuda.is_available() else "cpu")
except Exception:
    say("torch torch-only", torch.__version__); raise SystemExit
try:
    import mmcv
    assert mmcv.__version__ == mmcv_pin
    from mmcv.ops import nms
    nms(boxes, scores, .5)
    say("mmcv ok")
except Exception as e:
    say("mmcv bad", type(e).__name__)
try:
    from importlib.metadata import version
    assert version("xtcocotools") == xtc_pin
    import xtcocotools._mask
    from xtcocotools.coco import COCO
    say("xtcocotools ok")
except Exception as e:
    say("xtcocotools bad", type(e).__name__)
try:
    import pkg_resources, cv2, imageio_ffmpeg
    import mmdet.apis, mmpose.apis
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation
    say("stack ok")
except Exception as e:
    say("stack bad", type(e).__name__)
EOF
)"
  probe() { printf '%s\n' "$PROBE" | awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }'; }
  TORCH_STATE="$(probe torch)"; [ -n "$TORCH_STATE" ] || TORCH_STATE="none"
  pv() { local v; v="$(probe "$1")"; echo "${v:-not checked}"; }
  log "probe: torch: $TORCH_STATE | mmcv: $(pv mmcv) | xtcocotools: $(pv xtcocotools) | imports: $(pv stack)"

  # ------------------------------------------------------------------------------------------------------
  step "torch + torchvision"
  # Keep a torch that is already there when torchvision matches it (e.g. a cluster image's CUDA build);
  # otherwise install the pinned pair.
  TORCH_INFO=""
  case "$TORCH_STATE" in
    ok\ *)
      TORCH_INFO="${TORCH_STATE#ok }"
      log "keeping installed torch $(echo "$TORCH_INFO" | cut -d' ' -f1) + torchvision $(echo "$TORCH_INFO" | cut -d' ' -f2)"
      [ "$(echo "$TORCH_INFO" | cut -d' ' -f1 | cut -d+ -f1)" = "$TORCH_PIN" ] \
        || log "note: the tested pin is torch==$TORCH_PIN; mmcv is built against the installed one"
      ;;
    torch-only\ *)
      have="${TORCH_STATE#torch-only }"
      [ "${have%%+*}" = "$TORCH_PIN" ] \
        || die "torch $have is installed but torchvision is missing or broken; install the torchvision release that matches torch $have (or uninstall torch to get the pinned torch==$TORCH_PIN torchvision==$TORCHVISION_PIN)"
      log "installing torchvision==$TORCHVISION_PIN for torch $have"
      pip_install "torch==$have" "torchvision==$TORCHVISION_PIN"
      ;;
    *)
      log "installing torch==$TORCH_PIN torchvision==$TORCHVISION_PIN (several GB; on this machine kind from local files)"
      pip_install "torch==$TORCH_PIN" "torchvision==$TORCHVISION_PIN"
      ;;
  esac
  if [ -z "$TORCH_INFO" ]; then
    TORCH_INFO="$("$PY" -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.version.cuda or "none", "cuda" if torch.cuda.is_available() else "cpu")')" \
      || die "torch/torchvision do not import after installation"
  fi
  read -r TORCH_VER TV_VER TORCH_CUDA TORCH_DEV <<<"$TORCH_INFO"
  log "torch $TORCH_VER (CUDA build: $TORCH_CUDA, device: $TORCH_DEV), torchvision $TV_VER"
  printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VER" "$TV_VER" >> "$CONSTRAINTS"   # nothing may replace them now

  # ------------------------------------------------------------------------------------------------------
  step "OpenMMLab runtime requirements (opencv headless, ...)"
  ensure "mm requirements" "${MM_REQS[@]}"
  ensure "mmengine" --no-deps -- "mmengine==$MMENGINE_PIN"

  # ------------------------------------------------------------------------------------------------------
  step "mmcv $MMCV_PIN with compiled ops"
  MMCV_CHECK='
import mmcv, torch
assert mmcv.__version__ == "'"$MMCV_PIN"'", "mmcv " + mmcv.__version__
from mmcv.ops import nms
nms(torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]]), torch.tensor([1., .5]), .5)
'
  OPS_KIND="cpuops"
  if [ "$TORCH_DEV" = cuda ] || [ "${FORCE_CUDA:-0}" = 1 ]; then OPS_KIND="cudaops"; fi
  PYTAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  MMCV_CACHE="$CACHE_ROOT/wheels/mmcv-$MMCV_PIN/torch-${TORCH_VER//+/_}-cuda-$TORCH_CUDA-$OPS_KIND-$PYTAG"
  if [ "$REBUILD_MMCV" = 0 ] && [ "$(probe mmcv)" = ok ]; then
    log "mmcv $MMCV_PIN with ops: already installed and working"
  else
    cached="$(ls "$MMCV_CACHE"/mmcv-"$MMCV_PIN"-*.whl 2>/dev/null | head -n1 || true)"
    if [ "$REBUILD_MMCV" = 0 ] && [ -n "$cached" ]; then
      log "installing cached wheel $cached"
      pip_install --no-deps --force-reinstall "$cached"
      if ! "$PY" -c "$MMCV_CHECK" >/dev/null 2>&1; then
        log "the cached wheel does not work with this environment; removing it and building again"
        rm -f "$cached"; cached=""
      fi
    else
      cached=""
    fi
    if [ -z "$cached" ]; then
      log "building mmcv $MMCV_PIN from the PyPI source archive (MMCV_WITH_OPS=1, MAX_JOBS=$MAX_JOBS): 77 C++" \
          "files, ~25 CPU-minutes: 12-20 min on 2 cores"
      pip_run download --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_PIN" -d "$WORK/sdist"
      mkdir -p "$CACHE_ROOT/logs"
      BUILD_LOG="$CACHE_ROOT/logs/mmcv-$MMCV_PIN-build-$(date +%Y%m%d-%H%M%S).log"
      log "compiler output goes to $BUILD_LOG"
      # The project's one mmcv recipe (the C++20 patch, compiler flags): build_mmcv.sh, also used on GPU machines.
      PYTHON="$PY" bash "$REPO_DIR/build_mmcv.sh" "$WORK/sdist/mmcv-$MMCV_PIN.tar.gz" "$WORK/dist" \
        >"$BUILD_LOG" 2>&1 &
      build_pid=$!
      while kill -0 "$build_pid" 2>/dev/null; do
        sleep 30
        if kill -0 "$build_pid" 2>/dev/null; then
          log "  ... still compiling, ninja step $(grep -o '^ *\[[0-9]*/[0-9]*\]' "$BUILD_LOG" 2>/dev/null | tail -n1 | tr -d ' []' || true)"
        fi
      done
      if ! wait "$build_pid"; then
        tail -n 40 "$BUILD_LOG" >&2 || true
        die "building mmcv failed; full log: $BUILD_LOG"
      fi
      built="$(ls "$WORK"/dist/mmcv-"$MMCV_PIN"-*.whl 2>/dev/null | head -n1 || true)"
      [ -n "$built" ] || die "mmcv build produced no wheel; log: $BUILD_LOG"
      mkdir -p "$MMCV_CACHE"
      cp "$built" "$MMCV_CACHE/.tmp-$(basename "$built")" && mv "$MMCV_CACHE/.tmp-$(basename "$built")" "$MMCV_CACHE/$(basename "$built")"
      log "built $(basename "$built"); cached in $MMCV_CACHE"
      pip_install --no-deps --force-reinstall "$MMCV_CACHE/$(basename "$built")"
    fi
    "$PY" -c "$MMCV_CHECK" || die "mmcv $MMCV_PIN is installed but 'from mmcv.ops import nms' does not work"
    log "mmcv.ops works"
  fi

  # ------------------------------------------------------------------------------------------------------
  step "mmdet $MMDET_PIN, xtcocotools $XTCOCOTOOLS_PIN (from source), mmpose $MMPOSE_PIN"
  ensure "mmdet" --no-deps -- "mmdet==$MMDET_PIN"
  if [ "$(probe xtcocotools)" = ok ]; then
    log "xtcocotools: already installed and importable"
  else
    log "xtcocotools: building $XTCOCOTOOLS_PIN from source against numpy $("$PY" -c 'import numpy; print(numpy.__version__)')"
    pip_install --no-deps --force-reinstall --no-build-isolation --no-binary xtcocotools "xtcocotools==$XTCOCOTOOLS_PIN"
    "$PY" -c 'import xtcocotools._mask; from xtcocotools.coco import COCO' \
      || die "xtcocotools was built but does not import"
  fi
  ensure "mmpose" --no-deps -- "mmpose==$MMPOSE_PIN"

  # ------------------------------------------------------------------------------------------------------
  step "transformers, imageio"
  ensure "extras" "${EXTRA_REQS[@]}"
fi

# ----------------------------------------------------------------------------------------------------------
step "system packages: chromium (headless browser of the report test, tests/test_report.py)"
# Debian's package, ~115 MB download: about 30 s on the test machine when the apt lists are fresh.
if [ "$BROWSER" = 0 ]; then
  log "chromium: skipped (--no-browser)"
elif command -v chromium >/dev/null; then
  log "chromium: already installed ($(chromium --version 2>/dev/null | head -n1))"
elif [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  log "chromium: not installed and this is not root on Debian: install it with your package manager (apt-get" \
      "install chromium) or the report's browser test skips"
else
  export DEBIAN_FRONTEND=noninteractive
  # The lists are refreshed only when they do not know the package (a fresh image): the usual case costs nothing.
  apt-cache show chromium >/dev/null 2>&1 || apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends chromium >/dev/null
  log "chromium: installed ($(chromium --version 2>/dev/null | head -n1))"
fi

# ----------------------------------------------------------------------------------------------------------
step "shardprep itself (editable, with [test])"
if "$PY" - "$REPO_DIR" <<'EOF' >/dev/null 2>&1
# exit 0 only when shardprep is installed editable from this checkout and pyproject's requirements
# (dependencies + the test extra) are all satisfied
import json, sys
from importlib import metadata
from pathlib import Path
try:
    import tomllib
except ImportError:
    sys.exit(1)
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
repo = Path(sys.argv[1]).resolve()
dist = metadata.distribution("shardprep")
du = json.loads(dist.read_text("direct_url.json") or "{}")
if not du.get("dir_info", {}).get("editable"):
    sys.exit(1)
if Path(du["url"].removeprefix("file://")).resolve() != repo:
    sys.exit(1)
proj = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
if dist.version != proj["version"]:
    sys.exit(1)
for spec in proj.get("dependencies", []) + proj.get("optional-dependencies", {}).get("test", []):
    r = Requirement(spec)
    if r.marker is not None and not r.marker.evaluate():
        continue
    if not r.specifier.contains(metadata.version(r.name), prereleases=True):
        sys.exit(1)
EOF
then
  log "shardprep: already installed (editable) from $REPO_DIR"
else
  log "pip install -e \".[test]\""
  ( cd "$REPO_DIR" && pip_install -e ".[test]" )
  CHANGED=1
fi

# ----------------------------------------------------------------------------------------------------------
step "verify"
VERIFY='
import importlib
mods = ["shardprep", "submitit", "hydra", "omegaconf", "numpy", "h5py", "hdf5plugin", "tqdm", "PIL", "skimage", "pytest"]
for m in mods:
    importlib.import_module(m)
'
if [ "$MODE" = full ]; then
  VERIFY+='
import pkg_resources, cv2, imageio_ffmpeg
import mmcv, mmengine, mmdet, mmpose
from mmcv.ops import nms
import mmdet.apis, mmpose.apis
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation
import xtcocotools._mask
import torch, torchvision, transformers
print("torch", torch.__version__, "| torchvision", torchvision.__version__, "| mmcv", mmcv.__version__,
      "| mmengine", mmengine.__version__, "| mmdet", mmdet.__version__, "| mmpose", mmpose.__version__,
      "| transformers", transformers.__version__, "| opencv", cv2.__version__)
'
fi
if [ "$MODE" = full ] && [ "$CHANGED" = 0 ] && [ "$(probe stack)" = ok ]; then
  log "nothing was installed and the probe above imported the whole stack: skipping a second import pass"
elif "$PY" -W ignore -c "$VERIFY"; then
  log "all imports work"
else
  die "the final import check failed (see the traceback above)"
fi

step "done in $((SECONDS - T0)) s ($MODE mode$([ "$CHANGED" = 0 ] && echo ', nothing to change'))"
