#!/bin/bash
# Round 2, call 2 on the warm machine of call 1 (carry .gpu/wheels = the sglang-router 0.3.2 wheel;
#   OUT=dir DL=420 bash bench/gpu_round2_call2.sh   [TP=1 for tp_size=2 too]; the bundle, the 4B model and the Triton cache are on the warm
# machine from call 1): issue 19 with our ManagedRouter and SGLangServer(dp_size=2). Results under $OUT.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRITON_CACHE_DIR=/tmp/triton-cache TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s); el() { echo "$(( $(date +%s) - T0 ))"; }
DL=${DL:-420}
nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv
for i in 1 2 3 4 5 6; do P=$(pgrep -f "sglang.launch_server|sglang::" | tr '\n' ' '); [ -z "$P" ] && break; echo "left from call 1 (the suite cut at its limit): $P"; sleep 5; [ $i -ge 3 ] && for p in $P; do kill -9 $p 2>/dev/null; done; done
nvidia-smi --query-gpu=index,memory.used --format=csv
ls /tmp/site/sglang/__init__.py /tmp/models/Qwen3-Embedding-4B-random/config.json || exit 3
[ -d /tmp/site-router/sglang_router ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-router .gpu/wheels/sglang_router-*.whl || exit 1
export PYTHONPATH=/tmp/site:/tmp/site-router:/tmp/pylib:$PWD
python3 -c "import sglang, sglang_router, importlib.metadata as m; print('sglang', sglang.__version__, 'sglang-router', m.version('sglang-router'))"
echo "setup $(el) s"
timeout $(( DL + 30 )) python3 bench/gpu_managed_scale.py --model-dir /tmp/models/Qwen3-Embedding-4B-random --out $OUT/scale --deadline $DL --bulk 6000 ${TP:+--tp} > $OUT/scale.log 2>&1
echo "scale rc=$? at $(el) s"
{ for f in /tmp/scale-out/*.log; do echo "== $f"; grep -v "POST /v1\|Prefill batch" "$f" | tail -25; done; } > $OUT/scale-logs.txt 2>&1
nvidia-smi --query-gpu=index,memory.used --format=csv; nvidia-smi --query-compute-apps=pid,used_memory --format=csv
pgrep -fa "sglang|router" || echo "no sglang/router process left"
grep -v "^  " $OUT/scale.log | tail -45
echo "total $(el) s"
