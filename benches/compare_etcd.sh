#!/usr/bin/env bash
# Leader failover after SIGKILL: a 3-node etcd cluster against bossd, in
# one run, on this machine's loopback.
#
#   benches/compare_etcd.sh            # 10 runs of each
#   RUNS=30 benches/compare_etcd.sh
#
# etcd (Debian's etcd-server, installed here if missing) runs twice: with
# its defaults (heartbeat 100 ms, election timeout 1000 ms) and with
# --heartbeat-interval 50 --election-timeout 250. Each run starts a fresh
# cluster on 127.77.255.{1,2,3}, waits until it has a leader, kills the
# leader with SIGKILL and polls the two survivors' status
# (/v3/maintenance/status) until both name the same new leader. bossd runs
# the same measurement with 3 nodes through benches/cluster.rs: with its
# defaults, and with --strict (a majority quorum, which waits out the
# dead master's lease like etcd waits out its election timeout) at both
# timings. The last table divides etcd's median by bossd's. Every process
# started here is killed on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=${RUNS:-10}

if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  echo "etcd missing: installing Debian's etcd-server and etcd-client" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
command -v python3 >/dev/null || {
  echo "compare_etcd.sh needs python3 to time etcd" >&2
  exit 1
}

WORK=$(mktemp -d /tmp/bossd-etcd.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

echo "# compare_etcd: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(etcd --version | head -1); $RUNS runs each"

# The etcd half, in Python: it owns the etcd processes and kills them in
# every case (finally, and on SIGTERM/SIGINT through the default handlers
# raising KeyboardInterrupt/SystemExit).
cat >"$WORK/etcd_failover.py" <<'PY'
import http.client, json, os, shutil, signal, statistics, subprocess, sys, time

work, runs = sys.argv[1], int(sys.argv[2])
extra = sys.argv[3:]
ips = ["127.77.255.%d" % i for i in (1, 2, 3)]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

def status(conn):
    conn.request("POST", "/v3/maintenance/status", body="{}",
                 headers={"Content-Type": "application/json"})
    r = json.loads(conn.getresponse().read())
    return r["header"]["member_id"], r.get("leader", "0")

def one_run(n):
    token = "bench-%d-%d" % (os.getpid(), n)
    cluster = ",".join("e%d=http://%s:2380" % (i, ip) for i, ip in enumerate(ips))
    procs = []
    try:
        for i, ip in enumerate(ips):
            d = os.path.join(work, "e%d" % i)
            shutil.rmtree(d, ignore_errors=True)
            log = open(os.path.join(work, "e%d.log" % i), "w")
            procs.append(subprocess.Popen(
                ["etcd", "--name", "e%d" % i, "--data-dir", d,
                 "--listen-client-urls", "http://%s:2379" % ip,
                 "--advertise-client-urls", "http://%s:2379" % ip,
                 "--listen-peer-urls", "http://%s:2380" % ip,
                 "--initial-advertise-peer-urls", "http://%s:2380" % ip,
                 "--initial-cluster", cluster, "--initial-cluster-token", token,
                 "--initial-cluster-state", "new", "--logger", "zap",
                 "--log-level", "error"] + extra,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log))
        conns = [http.client.HTTPConnection(ip, 2379, timeout=5) for ip in ips]
        deadline = time.monotonic() + 60
        while True:
            try:
                st = [status(c) for c in conns]
                if st[0][1] != "0" and all(s[1] == st[0][1] for s in st):
                    break
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                for c in conns:
                    c.close()
            if time.monotonic() > deadline:
                raise SystemExit("etcd never elected a leader; logs in " + work)
            time.sleep(0.05)
        # A settled cluster: a few heartbeats after the election.
        time.sleep(1)
        members = [s[0] for s in st]
        leader = members.index(st[0][1])
        survivors = [i for i in range(3) if i != leader]
        t0 = time.monotonic()
        procs[leader].send_signal(signal.SIGKILL)
        rounds = 0
        while True:
            rounds += 1
            try:
                seen = [status(conns[i])[1] for i in survivors]
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                seen = []
            if len(seen) == 2 and seen[0] == seen[1] and seen[0] not in ("0", st[0][1]):
                elapsed = (time.monotonic() - t0) * 1e3
                return elapsed, elapsed / rounds
            if time.monotonic() - t0 > 60:
                raise SystemExit("etcd never elected a new leader; logs in " + work)
    finally:
        for p in procs:
            p.kill()
            p.wait()

times, rounds = [], []
for n in range(runs):
    t, r = one_run(n)
    times.append(t)
    rounds.append(r)
times.sort()
rank = lambda p: times[max(1, -(-p * len(times) // 100)) - 1]  # nearest rank
print("RESULT etcd_p50_ms=%.1f etcd_p99_ms=%.1f etcd_min_ms=%.1f etcd_max_ms=%.1f etcd_round_ms=%.2f"
      % (rank(50), rank(99), times[0], times[-1], statistics.median(rounds)))
PY

result() { # KEY LINE -> value of KEY=... in LINE
  tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"
}

echo "etcd, defaults ..." >&2
ETCD_DEFAULT=$(python3 "$WORK/etcd_failover.py" "$WORK" "$RUNS" | grep '^RESULT')
echo "etcd, --heartbeat-interval 50 --election-timeout 250 ..." >&2
ETCD_FAST=$(python3 "$WORK/etcd_failover.py" "$WORK" "$RUNS" \
  --heartbeat-interval 50 --election-timeout 250 | grep '^RESULT')

bossd() { # ARGS... -> the RESULT line of benches/cluster.rs
  cargo bench -q --bench cluster -- --only crash --runs "$RUNS" --nodes 3 "$@" 2>/dev/null |
    grep '^RESULT'
}
echo "bossd (cargo bench --bench cluster) ..." >&2
BOSSD=$(bossd)
BOSSD_STRICT=$(bossd --strict)
BOSSD_STRICT_FAST=$(bossd --strict --timing 50,250)

row() { # NAME RESULT-LINE KEY
  printf '| %-62s | %9.2f | %9.2f |\n' "$1" "$(result "$3_p50_ms" "$2")" "$(result "$3_p99_ms" "$2")"
}
ratio() { # NAME NUMERATOR-LINE KEY DENOMINATOR-LINE KEY
  awk -v name="$1" -v a="$(result "$3_p50_ms" "$2")" -v b="$(result "$5_p50_ms" "$4")" \
    'BEGIN { printf "| %-62s | %9.1f |\n", name, a / b }'
}
echo
echo "### Leader failover after SIGKILL of the leader, 3 nodes ($RUNS runs each)"
echo
echo "| system                                                         |    p50 ms |    p99 ms |"
echo "| -------------------------------------------------------------- | --------- | --------- |"
row "bossd, defaults (heartbeat 100, timeout 500)" "$BOSSD" crash
row "bossd --strict --quorum 2 (heartbeat 100, timeout 500)" "$BOSSD_STRICT" crash_strict
row "bossd --strict --quorum 2 --heartbeat 50 --timeout 250" "$BOSSD_STRICT_FAST" crash_strict
row "etcd, defaults (heartbeat 100, election timeout 1000)" "$ETCD_DEFAULT" etcd
row "etcd --heartbeat-interval 50 --election-timeout 250" "$ETCD_FAST" etcd
echo
echo "| ratio of medians                                               |   etcd /  |"
echo "| -------------------------------------------------------------- | --------- |"
ratio "etcd defaults / bossd defaults" "$ETCD_DEFAULT" etcd "$BOSSD" crash
ratio "etcd defaults / bossd --strict" "$ETCD_DEFAULT" etcd "$BOSSD_STRICT" crash_strict
ratio "etcd 50/250 / bossd --strict 50/250" "$ETCD_FAST" etcd "$BOSSD_STRICT_FAST" crash_strict
echo
echo "Poll round (resolution): etcd $(result etcd_round_ms "$ETCD_DEFAULT") ms and $(result etcd_round_ms "$ETCD_FAST") ms; bossd under 0.2 ms."
