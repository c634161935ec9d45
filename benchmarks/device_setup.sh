#!/usr/bin/env bash
# Install the OpenMMLab stack on a GPU machine that has torch but no OpenMMLab and no internet, from files carried in
# a folder (default .whl/): pure-Python wheels (mmengine, mmdet, mmpose and their small requirements), the
# xtcocotools sdist, and either a prebuilt mmcv wheel or the mmcv 2.1.0 sdist, built here by build_mmcv.sh (the
# recipe install.sh uses) with CUDA ops against the installed torch, for this GPU's architecture only.
#   bash benchmarks/device_setup.sh [.whl] [/tmp/site]     then: export PYTHONPATH=/tmp/site
set -euo pipefail
WHL=${1:-.whl}
SITE=${2:-/tmp/site}
WHL=$(cd "$WHL" && pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHL"/*.whl
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import xtcocotools._mask" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" "$WHL"/xtcocotools-*.tar.gz
fi
if ! python3 -c "import mmcv, torch; from mmcv.ops import nms" 2>/dev/null; then
  ARCH=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  # The project's one mmcv recipe (build_mmcv.sh, as install.sh builds it), CUDA ops for this GPU only.
  FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    bash "$(dirname "$0")/../build_mmcv.sh" "$WHL"/mmcv-2.1.0.tar.gz /tmp/mmcv-dist
  python3 -m pip install -q --no-index --no-deps --target "$SITE" /tmp/mmcv-dist/mmcv-*.whl
fi
python3 -c "import mmcv, mmdet.apis, mmpose.apis, torch; from mmcv.ops import nms; print('mmcv', mmcv.__version__, 'ops ok on', torch.cuda.get_device_name())"
