#!/usr/bin/env bash
# Two device calls on one warm 2-GPU machine (sglang 0.5.17 bundle), results under $OUT.
#   OUT=dir TOKENIZER_TGZ=qtok.tar.xz [TRITON_TGZ=cache.tgz] bash bench/gpu_round1.sh A
#   OUT=dir ROUTER_WHEEL=sglang_router-0.3.2-...whl bash bench/gpu_round1.sh B
# Phases run in the order given (`... A B` in one call where everything is on the machine already);
# `bash bench/gpu_round1.sh setup` only unpacks/installs what was carried (e.g. the router wheel
# first, then the bundle and `A B` in a second call: one call for every measurement).
# A: one-GPU levers in parallel (GPU 0: baseline with our client and query latency under bulk, then
#    bigger prefill batches; GPU 1: prefill CUDA graphs, then priority scheduling with an API key
#    in a --config file), then starts two single-GPU workers in sessions of their own for B.
# B: (the same machine, the router wheel carried) the workers behind sglang-router (round_robin,
#    cache_aware), then dp_size=2 and tp_size=2.
# The bundle is .whl/sglang-0517-bundle.tgz (../shared/tools/sglang-gpu-bundle-0517.sh); it and the
# router wheel do not fit one 64 MiB transfer together, hence two calls.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRITON_CACHE_DIR=/tmp/triton-cache TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:?set OUT to a results folder}
MODEL=/tmp/models/Qwen3-Embedding-4B-random
T0=$(date +%s)
el() { echo "$(( $(date +%s) - T0 ))"; }
nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv
# setup: whatever was carried this time (the machine keeps /tmp between calls while it is warm)
if [ -f .whl/sglang-0517-bundle.tgz ] && [ ! -f /tmp/site/sglang/__init__.py ]; then
  mkdir -p /tmp/site && tar -C /tmp/site -xzf .whl/sglang-0517-bundle.tgz
fi
if [ -n "${ROUTER_WHEEL:-}" ] && [ ! -d /tmp/site-router/sglang_router ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-router "$ROUTER_WHEEL" || exit 1
fi
[ -f /tmp/qtok/tokenizer.json ] || { [ -n "${TOKENIZER_TGZ:-}" ] && tar -C /tmp -xJf "$TOKENIZER_TGZ"; }
[ -n "${TRITON_TGZ:-}" ] && [ ! -d /tmp/triton-cache ] && tar -C /tmp -xzf "$TRITON_TGZ"
export PYTHONPATH=/tmp/site:/tmp/site-router:$PWD
python3 -c "import importlib.metadata as m; print('sglang', m.version('sglang'))" 2>/dev/null || echo "no sglang yet"
[ -d /tmp/site-router/sglang_router ] && echo "sglang-router $(ls -d /tmp/site-router/sglang_router-*.dist-info)"
for phase in "${@:-A}"; do
if [ "$phase" = A ]; then
  python3 -c "import sglang, torch, transformers; print('sglang', sglang.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
  [ -f $MODEL/config.json ] || python3 -c "
import sys; from pathlib import Path; sys.path.insert(0, 'bench')
from dp_scaling import build; build(Path('$MODEL'), Path('/tmp/qtok'))"
  echo "setup and model at $(el) s"
  mkdir -p "$OUT/levers"
  timeout ${LEVERS_S:-400} python3 bench/gpu_levers.py --model-dir $MODEL --tokenizer /tmp/qtok --gpu 0 --seed 0 \
    --config "base=--disable-cuda-graph" \
    --config "prefill-32k=--disable-cuda-graph --chunked-prefill-size 32768 --max-prefill-tokens 32768" \
    --core base --latency base --out "$OUT/levers" > "$OUT/levers0.log" 2>&1 &
  timeout ${LEVERS_S:-400} python3 bench/gpu_levers.py --model-dir $MODEL --tokenizer /tmp/qtok --gpu 1 --seed 1 \
    --config "cuda-graph-prefill=--cuda-graph-backend-prefill breakable --cuda-graph-backend-decode disabled" \
    --config "priority=--disable-cuda-graph --enable-priority-scheduling" \
    --latency priority --api-key priority --out "$OUT/levers" > "$OUT/levers1.log" 2>&1 &
  wait
  echo "levers done at $(el) s"
  pgrep -fa sglang.launch_server || echo "no sglang server left"
  [ "${WORKERS:-1}" = 1 ] && python3 bench/scale_out.py --model-dir $MODEL --launch-workers /tmp/scale-out-workers.json
  { for f in /tmp/levers/*.log; do echo "== $f"; grep -i "cuda graph\|capture\|error\|warn\|priority\|ready to roll\|max_total_num_tokens\|chunked" "$f" | grep -v "POST /v1" | tail -25; done; } > "$OUT/server-logs.txt" 2>&1
  tar -czf "$OUT/triton-cache.tgz" -C /tmp triton-cache 2>/dev/null
  for g in 0 1; do echo "===== GPU $g"; grep -v "^\[gpu$g\] .* r[0-9] " "$OUT/levers$g.log" | tail -22; done
elif [ "$phase" = B ]; then
  W=/tmp/scale-out-workers.json
  [ -f $W ] || W=""
  timeout $(( ${DEADLINE:-330} + 20 )) python3 bench/scale_out.py --model-dir $MODEL ${W:+--workers $W} --tp --deadline ${DEADLINE:-330} --out "$OUT/scale" > "$OUT/scale.log" 2>&1
  echo "scale-out rc=$? at $(el) s"
  { for f in /tmp/scale-out/*.log; do echo "== $f"; grep -v "POST /v1\|Prefill batch" "$f" | tail -30; done; } > "$OUT/scale-logs.txt" 2>&1
  pgrep -fa "sglang" || echo "no sglang process left"
  nvidia-smi --query-gpu=index,memory.used --format=csv
  grep -v " r[0-9] " "$OUT/scale.log" | tail -60
fi
done
echo "total $(el) s"
