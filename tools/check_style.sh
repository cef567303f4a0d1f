#!/usr/bin/env bash
# Checks the project's own C++ sources: clang-format (80 columns, the
# tree's .clang-format) and clang-tidy's naming rules. Needs build/ for
# compile_commands.json (tools/setup.sh makes it).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FACEVEC_BUILD_DIR:-$root/build}
cd "$root"

mapfile -t files < <(git ls-files '*.cpp' '*.h')
if [ ${#files[@]} -eq 0 ]; then
  exit 0
fi

clang-format --dry-run --Werror "${files[@]}"

mapfile -t sources < <(printf '%s\n' "${files[@]}" | grep '\.cpp$' \
  | grep -v '^tests/fuzz/')
# Only findings in the project's own files count: the naming check also
# looks into system headers (spdlog's macros) that we cannot rename.
own="^$root/(common|embed|index|storage|train|api|tools|bench|tests)/"
findings=$(printf '%s\n' "${sources[@]}" \
  | xargs -P 2 -n 8 clang-tidy -p "$build" --quiet 2>/dev/null \
  | grep -E "${own}.*(warning|error):" || true)
if [ -n "$findings" ]; then
  echo "$findings"
  echo "clang-tidy: the findings above break the naming rules" >&2
  exit 1
fi
echo "style: ok"
