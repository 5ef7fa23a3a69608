#!/usr/bin/env bash
# Run the CUDA tests, the benchmark on the GPU (with the CUDA-graph path) and a
# short training run on a machine with a CUDA device, saving every log in $OUT.
#
#   OUT=cuda-check MNIST=path/to/mnist bash tools/cuda-check.sh
#
# MNIST is a folder with the four IDX files; without it the training run is
# skipped. The package is used from this checkout through PYTHONPATH, so the
# machine needs torch (with CUDA), numpy, networkx, pytest and hypothesis only.
set -u -o pipefail

out=${OUT:-cuda-check}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available()); print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no device")' 2>&1 | tee "$out/environment.txt"

python3 -m pytest -q -p no:cacheprovider -m cuda -rs tests 2>&1 | tee "$out/pytest-cuda.log"

timeout 300 python3 -m ebmgraph.bench --device cuda --capture --output "$out/bench-cuda.jsonl" 2>&1 | tee "$out/bench-cuda.txt"

if [ -n "${MNIST:-}" ]; then
    timeout 180 python3 -m ebmgraph train --device cuda --data "$MNIST" --no-download --train-size 2000 \
        --validation-size 500 --epochs 2 --pretrain-epochs 1 --finetune-epochs 1 --quiet \
        --output "$out/train" 2>&1 | tee "$out/train.log"
fi
