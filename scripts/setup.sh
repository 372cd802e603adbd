#!/usr/bin/env bash
# Create .venv with everything the demo, the examples and the tests need (CPU only).
#
#   bash scripts/setup.sh            # then: .venv/bin/qwen-sglang demo
#
# torch is installed first and pinned by TORCH_SPEC (default torch==2.13.0) so that no other
# package pulls a multi-GB CUDA build by accident. On a machine where that version is not
# available as a CPU wheel, set TORCH_SPEC and PIP_EXTRA_INDEX_URL for your platform, e.g.
#   TORCH_SPEC="torch" PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade "pip>=25.1"
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
# The project with every extra but sglang (GPU only), plus the test, lint and docs groups.
"$VENV/bin/python" -m pip install -q -e ".[all]" --group test --group lint --group docs "langchain-openai>=1.0,<2"
echo "ready: $VENV (try: $VENV/bin/qwen-sglang demo)"
