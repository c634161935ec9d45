#!/usr/bin/env bash
# Fill a folder (default .whl/, git-ignored) with what benchmarks/device_setup.sh installs on a GPU machine that has
# torch but no internet: cp312 wheels of the OpenMMLab stack and its small requirements, shardprep's own
# requirements, pytest (the CUDA tests there) and py-spy (--lock-profile), the xtcocotools sdist, and mmcv 2.1.0:
# the prebuilt wheel of ../shared/device-wheels where there is one (valid for that machine's Python and torch only,
# see its README), else the sdist, which device_setup.sh builds there.
#   bash benchmarks/fetch_wheels.sh [.whl]      then carry it: run(..., carry=[".whl"])
set -euo pipefail
WHL=${1:-.whl}
mkdir -p "$WHL"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$WHL" mmengine==0.10.7 mmdet==3.3.0 mmpose==1.3.2 addict yapf platformdirs termcolor json_tricks munkres \
  terminaltables shapely pycocotools setuptools==80.9.0 hydra-core==1.3.8 omegaconf==2.3.1 submitit==1.5.4 \
  pytest pluggy iniconfig packaging py-spy
python3 -m pip download -q --no-deps --no-binary=:all: -d "$WHL" xtcocotools==1.14.3
python3 -m pip wheel -q --no-deps -w "$WHL" antlr4-python3-runtime==4.9.3  # pure Python, sdist only on PyPI
PREBUILT="$(dirname "$0")/../../shared/device-wheels/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl"
if [ -f "$PREBUILT" ]; then
  cp "$PREBUILT" "$WHL"/
else
  python3 -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$WHL" mmcv==2.1.0
fi
ls "$WHL"
