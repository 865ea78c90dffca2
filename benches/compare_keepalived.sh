#!/usr/bin/env bash
# A virtual IP's failover as a client sees it: bossd with
# contrib/vip-hook.sh against Debian's keepalived, three hosts in network
# namespaces, in one run. Needs root.
#
#   benches/compare_keepalived.sh            # about 15 minutes
#   benches/compare_keepalived.sh --quick    # one or two runs of each, about 2 minutes
#   RUNS=30 RUNS_SLOW=15 TIMINGS="100,500 50,150" benches/compare_keepalived.sh
#
# For each system the same three hosts and client are built (the topology
# of tests/vip.rs) and the master's host is hit RUNS times by each fault:
# its daemon SIGKILLed (crash), its link cut and then everything on it
# killed (power), its daemon SIGSTOPped (freeze), its service killed so
# that its health check fails (check: bossd's --check and keepalived's
# vrrp_script, the same script every second), and a planned move
# (handover: bossd's -handover; keepalived has none, so a stop with
# SIGTERM, its priority-0 advert); after each run it is restored and the
# lab settles. bossd runs with --no-preempt, as -handover needs. A client connecting to the VIP every 2 ms
# times the failover: from the fault to its first answer from another
# host. bossd runs at each heartbeat,timeout pair of TIMINGS (default
# 100,500, its defaults; 100,250, a heartbeat as often as keepalived's
# 0.1 s advert; and 50,150); keepalived (VRRP only, VRRPv3,
# priorities 150/100/50) with a 1 s advert (RUNS_SLOW runs: each takes
# seconds) and a 0.1 s advert. Before the faults, each host's daemon CPU
# is read over IDLE seconds (default 10). benches/util/vip_lab.py does the
# work and prints the tables, in Markdown for docs/BENCHMARKS.md. Every
# process it started is killed and every namespace deleted on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=${RUNS:-15}
RUNS_SLOW=${RUNS_SLOW:-10}
IDLE=${IDLE:-10}
TIMINGS=${TIMINGS:-"100,500 100,250 50,150"}
ADVERTS=${ADVERTS:-"1 0.1"}
if [ "${1:-}" = --quick ]; then
  RUNS=2 RUNS_SLOW=1 IDLE=2
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--quick]   (RUNS, RUNS_SLOW, IDLE, TIMINGS, ADVERTS, BOSSD_BIN in the environment)" >&2
  exit 2
fi

if [ "$(id -u)" != 0 ]; then
  echo "compare_keepalived.sh needs root: it builds network namespaces (sudo -E $0)" >&2
  exit 1
fi
missing=()
command -v keepalived >/dev/null || missing+=(keepalived)
command -v arping >/dev/null || missing+=(iputils-arping)
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian's ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -z "${BOSSD_BIN:-}" ]; then
  cargo build --release --quiet
  BOSSD_BIN=$PWD/target/release/bossd
fi

WORK=$(mktemp -d /tmp/bossd-keepalived.XXXXXX)
# The logs of every daemon stay for a look when the run failed.
trap 'rc=$?; if [ $rc = 0 ]; then rm -rf "$WORK"; else echo "logs in $WORK" >&2; fi' EXIT

echo "# compare_keepalived: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(date -u +%Y-%m-%dT%H:%MZ), bossd $("$BOSSD_BIN" --version | cut -d' ' -f2) at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(keepalived --version 2>&1 | head -1), $(arping -V 2>&1 | head -1), Linux $(uname -r)"
echo "# RUNS=$RUNS RUNS_SLOW=$RUNS_SLOW IDLE=$IDLE TIMINGS=\"$TIMINGS\" ADVERTS=\"$ADVERTS\""

python3 benches/util/vip_lab.py bench \
  --bossd "$BOSSD_BIN" --hook "$PWD/contrib/vip-hook.sh" --work "$WORK" \
  --runs "$RUNS" --runs-slow "$RUNS_SLOW" --idle "$IDLE" \
  --timings "$TIMINGS" --adverts "$ADVERTS"
