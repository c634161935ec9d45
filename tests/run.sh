#!/usr/bin/env bash
# The project's test command (README and CI): bring up the three-node SLURM cluster where this machine allows it,
# then run the whole suite. Without a cluster the SLURM tests skip and say why; in CI (CI=true) that is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! bash tests/slurm/start-cluster.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "tests/run.sh: the SLURM cluster did not come up; CI needs it" >&2
    exit 1
  fi
  echo "tests/run.sh: no SLURM cluster (needs root and Debian packages); SLURM tests will be skipped" >&2
fi
exec python3 -m pytest -q "$@"
