#!/usr/bin/env bash
# The facevec demo on real faces: a fresh database enrolled from a
# person-per-folder dataset (LFW by default) with the open-set split (the
# first photo of every person with two or more is the gallery; their other
# photos are known probes; people with one photo are strangers), every
# probe queried, and a short report: rank-1, known faces accepted,
# strangers let in at the stored threshold, images/s, database size.
#
#   tools/demo.sh [DATASET]      run from anywhere after tools/setup.sh
#   FACEVEC_FACES=dir            the dataset (default ../shared/faces)
#   FACEVEC_BUILD_DIR=dir        where facevec was built (default build)
#   FACEVEC_DEMO_DB=dir          the database to (re)create
#
# Without a dataset it falls back to tools/demo_vectors.sh (synthetic
# embeddings).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FACEVEC_BUILD_DIR:-$root/build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
bin=$build/tools/facevec
faces=${1:-${FACEVEC_FACES:-$root/../shared/faces}}
db=${FACEVEC_DEMO_DB:-$build/demo.db}

if [ ! -x "$bin" ]; then
  echo "demo: $bin not found; run tools/setup.sh first" >&2
  exit 1
fi
if [ ! -d "$faces" ]; then
  echo "demo: no dataset at $faces (set FACEVEC_FACES); running the" \
       "vector demo instead" >&2
  exec "$root/tools/demo_vectors.sh"
fi

exec "$bin" demo --faces "$faces" --db "$db"
