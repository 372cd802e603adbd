#!/usr/bin/env bash
# Query latency under a bulk job on a real GPU (bench/query_lane.py): one SGLangServer with the
# managed defaults (priority scheduling on), or a ManagedRouter of one SGLang worker per GPU.
#   OUT=dir bash bench/gpu_query_lane.sh [server|router] [ROUNDS] [BULK] [query_lane.py args: --modes, --config]
# Carry .whl/sglang-0517-bundle.tgz, .gpu/qtok.tar.xz and .gpu/triton-cache-0517-h200-r1.tgz (a
# warm machine keeps what an earlier call unpacked); for `router` the sglang-router wheel in
# .gpu/wheels (a second call: the bundle and the wheel exceed one 64 MiB transfer together).
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRITON_CACHE_DIR=/tmp/triton-cache TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:?set OUT to a results folder}
MODE=${1:-server} ROUNDS=${2:-3} BULK=${3:-4000}
shift 3 2>/dev/null || shift $#
MODEL=/tmp/models/Qwen3-Embedding-4B-random
T0=$(date +%s); el() { echo "$(( $(date +%s) - T0 ))"; }
nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv
if [ ! -f /tmp/site/sglang/__init__.py ] && [ -f .whl/sglang-0517-bundle.tgz ]; then
  mkdir -p /tmp/site && tar -C /tmp/site -xzf .whl/sglang-0517-bundle.tgz
fi
[ -f /tmp/qtok/tokenizer.json ] || tar -C /tmp -xJf .gpu/qtok.tar.xz
[ -d /tmp/triton-cache ] || tar -C /tmp -xzf .gpu/triton-cache-0517-h200-r1.tgz
if ls .gpu/wheels/sglang_router-*.whl >/dev/null 2>&1 && [ ! -d /tmp/site-router/sglang_router ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-router .gpu/wheels/sglang_router-*.whl
fi
export PYTHONPATH=/tmp/site:/tmp/site-router:$PWD
python3 -c "import sglang, torch; print('sglang', sglang.__version__, 'torch', torch.__version__)" || exit 3
[ -f $MODEL/config.json ] || python3 -c "
import sys; from pathlib import Path; sys.path.insert(0, 'bench')
from dp_scaling import build; build(Path('$MODEL'), Path('/tmp/qtok'))"
echo "setup $(el) s"
if [ "$MODE" = router ]; then
  TARGET=(--router "$MODEL" --gpus 0 1)
else
  TARGET=(--sglang "$MODEL" --gpu 0)
fi
timeout ${LIM:-560} python3 bench/query_lane.py "${TARGET[@]}" --rounds "$ROUNDS" --bulk "$BULK" --out "$OUT/query_lane_$MODE.json" "$@" 2>&1 | grep -v "^  " | tail -40
echo "done $(el) s"
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader
pgrep -fa "sglang|router_main" || echo "no sglang/router process left"
