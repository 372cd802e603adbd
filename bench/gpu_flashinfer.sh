#!/usr/bin/env bash
# flashinfer vs triton attention for the 4B-shape embedding server on one GPU (sglang 0.5.17 bundle):
# one server per backend, bench/gpu_levers.py's method (raw generator, distinct texts, base64).
#   OUT=dir [LIM=585] [FI_START=420] [ORDER="flashinfer triton"] bash bench/gpu_flashinfer.sh
# Carry .whl/sglang-0517-bundle.tgz, qtok.tar.xz and a Triton cache (QTOK=, TRITON_TGZ=); a
# FI_AOT=fi-aot.tgz from an earlier call puts flashinfer's compiled kernels where flashinfer
# loads them without compiling (flashinfer/data/aot/NAME/NAME.so). flashinfer compiles its
# kernels with nvcc at the first start (JIT; the bundle has no prebuilt ones): its workspace is
# /tmp/fi-ws (FLASHINFER_WORKSPACE_BASE), progress goes to $OUT/monitor.log every 20 s, and the
# compiled .so files come back as $OUT/fi-aot.tgz. The whole call ends by LIM seconds.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRITON_CACHE_DIR=/tmp/triton-cache TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# FLASHINFER_JIT_VERBOSE=1 alone also turns on FLASHINFER_JIT_DEBUG (nvcc -G: a debug build whose
# ptxas ran for minutes and was killed for memory, the first call's failure): keep debug off.
export FLASHINFER_WORKSPACE_BASE=/tmp/fi-ws FLASHINFER_JIT_VERBOSE=1 FLASHINFER_JIT_DEBUG=0 MAX_JOBS=${MAX_JOBS:-12}
OUT=${OUT:?set OUT to a results folder}
LIM=${LIM:-585}
MODEL=/tmp/models/Qwen3-Embedding-4B-random
T0=$(date +%s); el() { echo "$(( $(date +%s) - T0 ))"; }
nvidia-smi --query-gpu=index,name,memory.used,memory.total,driver_version --format=csv
nvcc --version | tail -2; ninja --version
[ -f /tmp/site/sglang/__init__.py ] || { mkdir -p /tmp/site && tar -C /tmp/site -xzf .whl/sglang-0517-bundle.tgz; }
[ -f /tmp/qtok/tokenizer.json ] || tar -C /tmp -xJf "${QTOK:-.gpu/qtok.tar.xz}"
[ -d /tmp/triton-cache ] || { [ -n "${TRITON_TGZ:-}" ] && tar -C /tmp -xzf "$TRITON_TGZ"; }
[ -n "${FI_AOT:-}" ] && [ -f "$FI_AOT" ] && mkdir -p /tmp/site/flashinfer/data/aot && tar -C /tmp/site/flashinfer/data/aot -xzf "$FI_AOT"
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import sglang, torch, transformers, flashinfer; print('sglang', sglang.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'flashinfer', flashinfer.__version__)"
[ -f $MODEL/config.json ] || python3 -c "
import sys; from pathlib import Path; sys.path.insert(0, 'bench')
from dp_scaling import build; build(Path('$MODEL'), Path('/tmp/qtok'))"
echo "setup and model at $(el) s"
( while sleep 20; do
    so=$(find /tmp/fi-ws -name '*.so' 2>/dev/null | wc -l); o=$(find /tmp/fi-ws -name '*.o' 2>/dev/null | wc -l)
    log=$(ls -t /tmp/levers/*.log 2>/dev/null | head -1)
    echo "[$(el) s] fi .so $so .o $o nvcc $(pgrep -c nvcc) cicc $(pgrep -c cicc) | ${log##*/}: $(tail -c 300 "$log" 2>/dev/null | tr '\n' ' ' | tail -c 200)"
  done ) > "$OUT/monitor.log" 2>&1 &
MON=$!
configs=()
for b in ${ORDER:-flashinfer triton}; do
  if [ "$b" = flashinfer ]; then configs+=(--config "flashinfer=--attention-backend flashinfer --disable-cuda-graph")
  else configs+=(--config "triton=--disable-cuda-graph"); fi
done
timeout $(( LIM - $(el) - 25 )) python3 bench/gpu_levers.py --model-dir $MODEL --tokenizer /tmp/qtok --gpu 0 --seed 0 \
  "${configs[@]}" --contenders raw-text --rounds 3 --startup-timeout "${FI_START:-420}" \
  --deadline $(( T0 + LIM - 25 )) --measure-s 55 --out "$OUT" > "$OUT/levers.log" 2>&1
echo "levers rc=$? at $(el) s"
kill $MON 2>/dev/null
pgrep -fa sglang.launch_server || echo "no sglang server left"
mkdir -p /tmp/fi-aot
for so in $(find /tmp/fi-ws -path '*cached_ops/*' -name '*.so' 2>/dev/null); do
  n=$(basename "$so" .so); mkdir -p /tmp/fi-aot/$n && cp "$so" /tmp/fi-aot/$n/
done
ls -la /tmp/fi-aot/*/ 2>/dev/null; du -sh /tmp/fi-ws 2>/dev/null
[ -n "$(ls /tmp/fi-aot)" ] && tar -czf "$OUT/fi-aot.tgz" -C /tmp/fi-aot . && ls -la "$OUT/fi-aot.tgz"
for f in /tmp/levers/*.log; do
  echo "== $f"; grep -v "POST /v1\|Prefill batch" "$f" | grep -v "^\[[0-9]*/[0-9]*\] .*nvcc" | tail -40
  grep -c "nvcc" "$f"; grep "^\[[0-9]*/[0-9]*\]" "$f" | cut -c1-160 | tail -20
done > "$OUT/server-logs.txt" 2>&1
gzip -c /tmp/levers/gpu0-flashinfer.log > "$OUT/flashinfer-server.log.gz" 2>/dev/null
tail -15 "$OUT/monitor.log"
grep -v " r[0-9] " "$OUT/levers.log" | tail -25
echo "total $(el) s"
