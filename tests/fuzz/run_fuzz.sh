#!/usr/bin/env bash
# Builds the decode_bytes fuzzer with clang and runs it.
#
#   tests/fuzz/run_fuzz.sh [BUILD_DIR] [SECONDS]
#
# BUILD_DIR defaults to build-fuzz/ in the repository, SECONDS to 60. The
# seed corpus is made at run time by tests/image_fixtures.py. Exits
# non-zero when the fuzzer finds a crash, leak or timeout; the input is
# kept in BUILD_DIR/artifacts/.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build-fuzz}
seconds=${2:-60}

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++ >/dev/null
fi
cmake --build "$build" -j2 >/dev/null

python=/usr/bin/python3
[ -x "$python" ] || python=python3
seeds="$build/seeds"
rm -rf "$seeds"
"$python" "$root/tests/image_fixtures.py" "$seeds.all" >/dev/null
mkdir -p "$seeds" "$build/corpus" "$build/artifacts"
find "$seeds.all" -type f ! -name '*.ref' -size -64k -exec cp {} "$seeds" \;
rm -rf "$seeds.all"

"$build/decode_fuzzer" -max_total_time="$seconds" -timeout=10 \
  -rss_limit_mb=2560 -max_len=65536 -print_final_stats=1 \
  -artifact_prefix="$build/artifacts/" "$build/corpus" "$seeds"
