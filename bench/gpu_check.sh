#!/bin/sh
# The first thing a GPU host runs: build the SD 1.5-shaped random backbone (real architecture, seeded random
# weights: no download) and measure every deployment path on the GPU in fp16 with `coinage bench realsize
# --device cuda` (ONNX export and images/s, text encoding, a training step, UNet passes at 512 px, one preview at
# the default steps, a GAIR grid, process memory). Meant to fit in 5 minutes after the build.
#
#   sh bench/gpu_check.sh              # from the repository root, with `make install` done (or .venv present)
#   OUT=/some/dir sh bench/gpu_check.sh  # results there (default bench/results/realsize-cuda.json)
set -eu
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench/results}
DIR=${BACKBONE_DIR:-var/sd15-random}
mkdir -p "$OUT" var
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device here: run bench/gpu_check.sh on a GPU host')"
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0))"
[ -f "$DIR/coinage_backbone.json" ] || time "$PY" -m coinage.cli backbone random sd15 "$DIR"
time "$PY" -m coinage.cli bench realsize --backbone "$DIR" --device cuda --threads "$(nproc)" \
    --onnx-cache var/onnx-gpu --out "$OUT/realsize-cuda.json"
# the bulk indexer's embed stage on the GPU: Ray Data with one embed actor on CUDA against the in-process path
# (a generated 2,000-row catalog; needs `pip install 'coinage[ray]'`)
time "$PY" -m coinage.cli bench indexing --ray-workers 1 --ray-rows 2000 --device cuda \
    --onnx-cache var/onnx-gpu --out "$OUT/indexing-ray-cuda.json"
