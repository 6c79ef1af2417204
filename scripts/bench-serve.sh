#!/usr/bin/env bash
# Load test of rnmt-serve on loopback: CLIENTS concurrent clients send REQUESTS requests in
# all, each with SENTENCES sentences from the bundled test set; reports requests/s,
# sentences/s and the latency p50/p99. Bounded: at most REQUESTS requests, nothing leaves
# the machine.
#
#   scripts/bench-serve.sh MODEL_DIR                  (CLIENTS=8 REQUESTS=200 SENTENCES=1)
#   CLIENTS=16 SENTENCES=4 scripts/bench-serve.sh runs/main
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model=${1:?usage: scripts/bench-serve.sh MODEL_DIR}
CLIENTS=${CLIENTS:-8}
REQUESTS=${REQUESTS:-200}
SENTENCES=${SENTENCES:-1}
BEAM=${BEAM:-5}
THREADS=${THREADS:-2}
cargo build --release --quiet --bin rnmt-serve
log=$(mktemp)
trap 'kill "$pid" 2>/dev/null; rm -f "$log"' EXIT
target/release/rnmt-serve --model "$model" --port 0 --threads "$THREADS" --beam "$BEAM" 2> "$log" &
pid=$!
for _ in $(seq 600); do grep -q "listening on" "$log" && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on http:\/\/\(.*\)/\1/p' "$log")
[[ -n "$addr" ]] || { cat "$log" >&2; exit 1; }
python3 - "$addr" "$CLIENTS" "$REQUESTS" "$SENTENCES" <<'PY'
import json, sys, threading, time, urllib.request
addr, clients, requests, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lines = [l.split("\t")[0] for l in open("corpora/lohelp.en-fr.test.tsv", encoding="utf-8")]
latencies, errors, lock = [], [], threading.Lock()
counter = iter(range(requests))
def client():
    while True:
        with lock:
            i = next(counter, None)
        if i is None:
            return
        body = json.dumps([{"src": lines[(i * per + k) % len(lines)], "id": 100} for k in range(per)]).encode()
        req = urllib.request.Request(f"http://{addr}/translator/translate", data=body,
                                     headers={"Content-Type": "application/json"})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                out = json.load(r)
                assert len(out[0]) == per
        except Exception as e:  # counted, not hidden
            with lock:
                errors.append(str(e))
            continue
        with lock:
            latencies.append(time.perf_counter() - t0)
start = time.perf_counter()
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
wall = time.perf_counter() - start
latencies.sort()
q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
print(f"{len(latencies)} requests ({per} sentence(s) each) from {clients} clients in {wall:.1f}s: "
      f"{len(latencies) / wall:.1f} requests/s, {len(latencies) * per / wall:.1f} sentences/s; "
      f"latency p50 {q(0.5):.0f} ms, p99 {q(0.99):.0f} ms; {len(errors)} errors")
PY
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; model $model, beam $BEAM, $THREADS libtorch threads"
