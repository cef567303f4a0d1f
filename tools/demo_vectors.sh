#!/usr/bin/env bash
# The vector demo (no photos needed), synthetic embeddings: clusters on the unit sphere
# stand in for people. It imports a gallery into a fresh database, queries
# held-out probes of the same people and strangers, and prints rank-1
# accuracy, how many were accepted or rejected, throughput and db size.
#
#   tools/demo_vectors.sh                    run from the repo root after setup.sh
#   FACEVEC_BUILD_DIR=dir            where facevec was built (default build)
#   DEMO_PEOPLE=n DEMO_PER_PERSON=m  gallery size (default 10000 x 3)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FACEVEC_BUILD_DIR:-$root/build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
bin=$build/tools/facevec
people=${DEMO_PEOPLE:-10000}
per_person=${DEMO_PER_PERSON:-3}
strangers=${DEMO_STRANGERS:-2000}
dim=128
# Per-component noise around a person's centre: same-person squared
# distances land near 0.6, different people near 2 (unit vectors).
noise=0.06
threshold=1.0

if [ ! -x "$bin" ]; then
  echo "demo: $bin not found; run tools/setup.sh first" >&2
  exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/facevec-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "demo: generating $people people x $per_person vectors (d=$dim)," \
  "$people probes and $strangers strangers"
/usr/bin/python3 - "$tmp" "$people" "$per_person" "$strangers" "$dim" \
  "$noise" <<'EOF'
import sys
import numpy as np

out, people, per, strangers, dim = sys.argv[1], *map(int, sys.argv[2:6])
noise = float(sys.argv[6])
rng = np.random.default_rng(7)

def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("<f4")

centres = unit(rng.standard_normal((people, dim)))
def samples(reps):
    idx = np.repeat(np.arange(people), reps)
    return unit(centres[idx] + noise * rng.standard_normal((len(idx), dim)))

np.save(f"{out}/gallery.npy", samples(per))
np.save(f"{out}/probes.npy", samples(1))
np.save(f"{out}/strangers.npy", unit(rng.standard_normal((strangers, dim))))
names = [f"person_{i:05d}" for i in range(people)]
with open(f"{out}/gallery.labels.txt", "w") as f:
    f.writelines(f"{n}\n" for n in names for _ in range(per))
with open(f"{out}/probes.truth.txt", "w") as f:
    f.writelines(f"{n}\n" for n in names)
EOF

now() { date +%s.%N; }

"$bin" create --db "$tmp/db" --dim "$dim" --normalized \
  --threshold "$threshold" >/dev/null
t0=$(now)
"$bin" import --db "$tmp/db" --vectors "$tmp/gallery.npy" >"$tmp/import.txt"
t1=$(now)
"$bin" query --db "$tmp/db" --vectors "$tmp/probes.npy" -k 5 \
  >"$tmp/probes.jsonl"
t2=$(now)
"$bin" query --db "$tmp/db" --vectors "$tmp/strangers.npy" -k 5 \
  >"$tmp/strangers.jsonl"
db_bytes=$(du -sb "$tmp/db" | cut -f1)

/usr/bin/python3 - "$tmp" "$t0" "$t1" "$t2" "$db_bytes" "$people" \
  "$per_person" <<'EOF'
import json
import sys

out = sys.argv[1]
t0, t1, t2 = map(float, sys.argv[2:5])
db_bytes, people, per = map(int, sys.argv[5:8])
truth = open(f"{out}/probes.truth.txt").read().split("\n")[:-1]
probes = [json.loads(l) for l in open(f"{out}/probes.jsonl")]
strangers = [json.loads(l) for l in open(f"{out}/strangers.jsonl")]

rank1 = sum(p["top"] and p["top"][0]["person"] == t
            for p, t in zip(probes, truth))
accepted_right = sum(p["person"] == t for p, t in zip(probes, truth))
accepted = sum(p["person"] is not None for p in probes)
rejected = sum(s["person"] is None for s in strangers)
n = len(probes)
print(open(f"{out}/import.txt").read().strip())
print(f"gallery:   {people * per} vectors of {people} people, "
      f"{db_bytes / 1e6:.1f} MB on disk")
print(f"import:    {people * per / (t1 - t0):,.0f} vectors/s "
      "(whole command, incl. open)")
print(f"query:     {n / (t2 - t1):,.0f} vectors/s (whole command)")
print(f"probes:    rank-1 {100 * rank1 / n:.2f}%, accepted {accepted}/{n}, "
      f"accepted as the right person {accepted_right}/{n}")
print(f"strangers: rejected {rejected}/{len(strangers)} as unknown")
EOF
