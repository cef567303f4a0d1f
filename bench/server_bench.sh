#!/usr/bin/env bash
# HTTP queries against the in-process API on the same workload.
#
# vectors: a database of N random vectors of dim D (Debian's numpy, fixed
# seed) made with `facevec import`; each request is one vector.
# images: a database of the first PHOTOS LFW photos in name order
# (face-resnet, `facevec enroll --faces central`); each request is the
# next LFW photo, base64 in JSON, every face in it queried.
#
# For each workload and each concurrency C in 1 8 64:
#   - server_bench: C threads calling the C++ API in process
#     (engine::query; for images face_pipeline::process_bytes first);
#   - `facevec serve` + wrk with C connections posting the same body to
#     POST /v1/query;
# and prints requests/s, p50, p99 and the ratio server / in-process.
# FACEVEC_THREADS applies to both sides (set it to 1 on a busy machine).
#
#   bench/server_bench.sh [BUILD_DIR]
#   env: WORKLOADS ("vectors images"), N (100000), D (128), K (5),
#        PHOTOS (200), SECONDS_PER_RUN (10), IMAGE_SECONDS_PER_RUN (20),
#        PORT (18080), FACEVEC_FACES (../shared/faces beside the checkout)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build}
facevec=$build/tools/facevec
baseline=$build/bench/server_bench
workloads=${WORKLOADS:-vectors images}
n=${N:-100000}
d=${D:-128}
k=${K:-5}
photos=${PHOTOS:-200}
secs=${SECONDS_PER_RUN:-10}
image_secs=${IMAGE_SECONDS_PER_RUN:-20}
port=${PORT:-18080}
faces=${FACEVEC_FACES:-$root/../shared/faces}

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

key=bench-key-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
echo "$key" > "$work/keys.txt"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)," \
  "$(getconf _NPROCESSORS_ONLN) CPUs," \
  "FACEVEC_THREADS=${FACEVEC_THREADS:-unset}"

# The vector database and its query body.
make_vectors() {
  /usr/bin/python3 - "$work" "$n" "$d" "$k" <<'PY'
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
with open(f"{work}/vectors.json", "w") as f:
    json.dump({"vectors": [query], "k": k}, f)
PY
  "$facevec" create --db "$work/vectors" --dim "$d" >/dev/null
  "$facevec" import --db "$work/vectors" --vectors "$work/vectors.npy" \
    --labels "$work/labels.txt" >/dev/null
  echo "vectors: $n x $d, k=$k, ${secs}s per run"
}

# The photo database and a query body holding the photo after them.
make_images() {
  find "$faces/lfw" -name '*.jpg' | sort > "$work/all_photos.txt"
  head -n "$((photos + 1))" "$work/all_photos.txt" > "$work/photos.txt"
  head -n "$photos" "$work/photos.txt" \
    | sed 's|^\(.*/\([^/]*\)/[^/]*\)$|\1,\2|' > "$work/manifest.csv"
  cp "$(tail -n 1 "$work/photos.txt")" "$work/probe.jpg"
  /usr/bin/python3 - "$work" "$k" <<'PY'
import base64, json, sys
work, k = sys.argv[1], int(sys.argv[2])
with open(f"{work}/probe.jpg", "rb") as f:
    photo = base64.b64encode(f.read()).decode()
with open(f"{work}/images.json", "w") as f:
    json.dump({"images": [photo], "k": k}, f)
PY
  "$facevec" enroll --db "$work/images" --faces central \
    "$work/manifest.csv" 2>"$work/enroll.log" | tail -n 1 || true
  echo "images: probe $(basename "$(tail -n 1 "$work/photos.txt")"), k=$k," \
    "${image_secs}s per run"
}

cat > "$work/query.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
local f = io.open(os.getenv("BODY"))
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

# run WORKLOAD SECONDS [IMAGE]: both sides at 1, 8 and 64 connections.
run() {
  local workload=$1 seconds=$2 image=${3:-}
  echo "== $workload"
  printf "%-5s %-9s %10s %9s %9s\n" conns side "req/s" "p50 ms" "p99 ms"
  for c in 1 8 64; do
    # shellcheck disable=SC2086  # $image is empty or one path
    inproc=$("$baseline" "$work/$workload" "$work/$workload.json" "$c" \
      "$seconds" $image)

    "$facevec" serve --db "$work/$workload" --listen "127.0.0.1:$port" \
      --keys "$work/keys.txt" --threads 64 --request-timeout 0 \
      >/dev/null 2>"$work/serve.log" &
    server_pid=$!
    for _ in $(seq 300); do
      curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
      sleep 0.1
    done
    threads=$(( c < 2 ? 1 : 2 ))
    http=$(BODY="$work/$workload.json" wrk -t"$threads" -c"$c" \
      -d"${seconds}s" --timeout 60s -s "$work/query.lua" \
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
}

for workload in $workloads; do
  case $workload in
    vectors) make_vectors; run vectors "$secs" ;;
    images) make_images; run images "$image_secs" "$work/probe.jpg" ;;
    *) echo "server_bench: unknown workload $workload" >&2; exit 2 ;;
  esac
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
