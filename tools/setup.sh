#!/usr/bin/env bash
# Installs what facevec needs from Debian 12 packages (only what is
# missing; quiet when everything is there), then configures and builds it
# with CMake into build/. Safe to run again.
#
#   tools/setup.sh            install, configure, build
#   FACEVEC_BUILD_DIR=dir     build somewhere else (default: build)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FACEVEC_BUILD_DIR:-$root/build}

packages=(
  build-essential cmake pkg-config git
  libfaiss-dev libopenblas-openmp-dev libomp-dev
  librocksdb-dev
  libdnnl-dev
  libturbojpeg0-dev libjpeg62-turbo-dev libpng-dev libexif-dev
  libhdf5-dev libssl-dev
  libdlib-dev libdlib-data
  libcli11-dev nlohmann-json3-dev libcpp-httplib-dev libspdlog-dev
  prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang clang-format clang-tidy libclang-rt-14-dev
  python3 python3-numpy python3-pil python3-matplotlib
  imagemagick wrk
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
      | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# npm fetches the pretrained face weights; a machine may already have
# Node.js and npm from elsewhere, which Debian's packages would conflict
# with.
if ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi

# FAISS must use the OpenMP build of OpenBLAS: the pthreads build's threads
# fight FAISS's OpenMP threads.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || true)
case "$blas" in
  *openblas-openmp*) ;;
  *)
    echo "setup: selecting the OpenMP build of OpenBLAS" >&2
    update-alternatives --set libblas.so.3-x86_64-linux-gnu \
      /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3 >/dev/null
    update-alternatives --set liblapack.so.3-x86_64-linux-gnu \
      /usr/lib/x86_64-linux-gnu/openblas-openmp/liblapack.so.3 >/dev/null
    ;;
esac

# Pretrained weights from their pinned npm package (checksum checked).
if [ -x "$root/tools/fetch_models.sh" ]; then
  "$root/tools/fetch_models.sh"
fi

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j2 2>&1 | grep -vE '^\[ *[0-9]+%\]|^-- ' || true
# The grep above hides progress lines; the build's own status decides.
cmake --build "$build" -j2 >/dev/null
