#!/usr/bin/env bash
# HTTP vector queries against the in-process engine on the same workload.
#
# Builds a database of N random vectors of dim D (Debian's numpy, fixed
# seed) with `facevec import`, then for each concurrency C in 1 8 64:
#   - server_bench: C threads calling engine::query in process;
#   - `facevec serve` + wrk with C connections posting the same body to
#     POST /v1/query;
# and prints requests/s, p50, p99 and the ratio server / in-process.
#
#   bench/server_bench.sh [BUILD_DIR]
#   env: N (100000), D (128), K (5), SECONDS_PER_RUN (10), PORT (18080)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build}
facevec=$build/tools/facevec
baseline=$build/bench/server_bench
n=${N:-100000}
d=${D:-128}
k=${K:-5}
secs=${SECONDS_PER_RUN:-10}
port=${PORT:-18080}

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The data, the query body and a key.
/usr/bin/python3 - "$work" "$n" "$d" "$k" <<'EOF'
import json, sys
import numpy as np
work, n, d, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(7)
np.save(f"{work}/vectors.npy", rng.standard_normal((n, d), dtype=np.float32))
faces_per_person = 10
with open(f"{work}/labels.txt", "w") as f:
    for i in range(n):
        f.write(f"person{i // faces_per_person:07d}\n")
query = rng.standard_normal(d, dtype=np.float32).tolist()
with open(f"{work}/body.json", "w") as f:
    json.dump({"vectors": [query], "k": k}, f)
EOF
key=bench-key-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
echo "$key" > "$work/keys.txt"

"$facevec" create --db "$work/db" --dim "$d" >/dev/null
"$facevec" import --db "$work/db" --vectors "$work/vectors.npy" \
  --labels "$work/labels.txt" >/dev/null
echo "database: $n x $d, k=$k, ${secs}s per run, $(nproc) CPUs"

cat > "$work/query.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
local f = io.open("$work/body.json")
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("wrk: rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout))
end
EOF

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

printf "%-5s %-9s %10s %9s %9s\n" conns side "req/s" "p50 ms" "p99 ms"
for c in 1 8 64; do
  inproc=$("$baseline" "$work/db" "$work/body.json" "$c" "$secs")

  "$facevec" serve --db "$work/db" --listen "127.0.0.1:$port" \
    --keys "$work/keys.txt" --threads 64 >/dev/null 2>"$work/serve.log" &
  server_pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  threads=$(( c < 2 ? 1 : 2 ))
  http=$(wrk -t"$threads" -c"$c" -d"${secs}s" -s "$work/query.lua" \
    "http://127.0.0.1:$port/v1/query" | grep '^wrk:')
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=""

  for side in inproc http; do
    line=${!side}
    printf "%-5s %-9s %10s %9s %9s\n" "$c" "$side" \
      "$(echo "$line" | field rps)" "$(echo "$line" | field p50_ms)" \
      "$(echo "$line" | field p99_ms)"
  done
  errors=$(echo "$http" | field errors)
  ratio=$(/usr/bin/python3 -c "print(f'{$(echo "$http" | field rps) / \
$(echo "$inproc" | field rps):.2f}')")
  echo "      ratio http/inproc req/s: $ratio (http errors: $errors)"
done
