#!/bin/sh
# The GPU benchmark on a bare GPU machine that has python and torch only (no registry, no GIS libraries):
#   sh benchmarks/gpu_bench.sh [gpu_suite.py options]
# Installs ./wheelhouse (built here by benchmarks/gpu_wheelhouse.py) into ./.gpu-deps without any index,
# puts it and the repository on PYTHONPATH, prints the GPU and runs benchmarks/gpu_suite.py.
set -e
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -f wheelhouse/requirements.txt ]; then
  "$PY" -m pip install -q --no-index --no-deps --find-links wheelhouse --target .gpu-deps -r wheelhouse/requirements.txt
fi
# no hub downloads there; USE_HUB_KERNELS=0: transformers would otherwise demand the `kernels` package
export PYTHONPATH="$PWD:$PWD/.gpu-deps${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 USE_HUB_KERNELS=0
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
exec "$PY" benchmarks/gpu_suite.py "$@"
