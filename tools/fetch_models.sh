#!/usr/bin/env bash
# Fetches the pretrained face ResNet into the model cache
# (${FACEVEC_CACHE:-$HOME/.cache/facevec}): `npm pack` of the pinned
# @vladmandic/face-api package, its two model files extracted to
# face-api-<version>/, and the model's SHA-256 checked (a mismatch is
# fatal and leaves nothing behind). facevec imports these files when it
# loads the model "face-resnet"; nothing else is needed. Idempotent and
# quiet when the files are already there.
set -euo pipefail

package=@vladmandic/face-api
version=1.7.15
sha256=b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589
model=face_recognition_model.bin
manifest=face_recognition_model-weights_manifest.json

cache=${FACEVEC_CACHE:-$HOME/.cache/facevec}
dest=$cache/face-api-$version

check() {
  echo "$sha256  $1" | sha256sum --check --status
}

if [ -f "$dest/$manifest" ] && [ -f "$dest/$model" ] && check "$dest/$model"
then
  exit 0
fi

echo "fetch_models: fetching $package@$version into $dest" >&2
mkdir -p "$cache"
work=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$package@$version" >/dev/null)
tarball=$(ls "$work"/*.tgz)
tar -xzf "$tarball" -C "$work" "package/model/$model" "package/model/$manifest"

if ! check "$work/package/model/$model"; then
  echo "fetch_models: SHA-256 MISMATCH for $package@$version $model" >&2
  echo "fetch_models: expected $sha256" >&2
  echo "fetch_models: got      $(sha256sum "$work/package/model/$model" \
    | cut -d' ' -f1)" >&2
  exit 1
fi

mkdir -p "$dest"
mv "$work/package/model/$model" "$work/package/model/$manifest" "$dest/"
echo "fetch_models: ok ($dest)" >&2
