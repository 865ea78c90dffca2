#!/usr/bin/env python3
"""Client-seen failover of a virtual IP: bossd against keepalived.

Run by benches/compare_keepalived.sh, as root; see docs/BENCHMARKS.md.

The topology is tests/vip.rs's: three hosts and a client, each in its own
network namespace on one bridge. Every host runs a service that answers
each TCP connection with its host's name, and the system under test:
bossd with contrib/vip-hook.sh as its --notify hook, or keepalived with one
VRRP instance holding the same virtual IP. The client, inside its own
namespace, opens a fresh connection to the VIP every 2 ms (each given
100 ms) and reports who answered when. For each fault the master's host
is hit, at a random phase of the heartbeat or advert, and the time from
the fault to the client's first answer from another host is one sample;
then the host is restored and the lab settles before the next run:

  crash   the daemon is SIGKILLed (keepalived: its parent and VRRP child
          at once); restored by starting it again, as systemd's Restart=
  power   the host's link is cut at the bridge first, so no FIN or RST
          escapes, then everything on it is killed and its namespace
          deleted; restored by a fresh namespace with the same MAC, then
          the service and the daemon, as after a boot
  freeze  the daemon is SIGSTOPped; restored by SIGCONT
  check   the service is killed, the daemon runs on: its health check (a
          TCP connect to the service, every CHECK_INTERVAL, failing once)
          moves the VIP; restored by starting the service again
  handover the planned move: bossd's `-handover` on the master; keepalived
          has no step-down command, so its planned move is a stop with
          SIGTERM (it sends a priority-0 advert, and a backup takes over
          at once); restored by starting it again. The sample here is the
          gap the client sees: from its last request the old host
          answered to its first the new one answered

bossd runs with --no-preempt, as a VIP cluster should (its -handover
needs it), so a restored host stays a follower; keepalived preempts (its
default), so its preferred host takes the VIP back after each restore.

Before the faults, with the client paused, each host's daemon processes'
CPU over an idle window is read from /proc/PID/schedstat.

Subcommands `serve NAME` and `client IP` are the service and the client;
the benchmark runs them inside the namespaces with `ip netns exec`. Every
process it starts is killed and every namespace deleted on exit, also on
SIGTERM and SIGINT. Addresses are 10.117.C.0/24, only inside namespaces
made here. Nothing here asserts a timing.
"""

import argparse
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

NET = "10.117"
VIP_HOST = 100
CLIENT_HOST = 200
HOSTS = (1, 2, 3)
BOSSD_PORT = 7000
SERVICE_PORT = 8080
CUT_TABLE = "bossd_vip_cut"

# The client: a connection every ASK_EVERY, each given ASK_TIMEOUT; at most
# MAX_IN_FLIGHT of them (those to a dead host's MAC pile up until their
# time is out).
ASK_EVERY = 0.002
ASK_TIMEOUT = 0.1
MAX_IN_FLIGHT = 128
MAX_ANSWER = 16

# How long a fault may take to be followed by an answer from a new master
# before the run counts as lost; how long the lab may take to settle.
FAILOVER_DEADLINE = 20.0
SETTLE_DEADLINE = 60.0
# The client must be answered by one host only for this long (and for
# three adverts) before a run starts.
QUIET = 0.5
POLL = 0.01
# The health check both systems run: a script that connects to the host's
# own service (bash's /dev/tcp), every CHECK_INTERVAL seconds (keepalived's
# vrrp_script interval is whole seconds), one failure being enough.
CHECK = "#!/bin/sh\nexec bash -c ': </dev/tcp/127.0.0.1/%d'\n" % SERVICE_PORT
CHECK_INTERVAL = 1

# keepalived's priorities: host 1 is the preferred master and preempts
# when it is back (bossd's cluster here runs with --no-preempt instead).
KEEPALIVED_PRIORITY = {1: 150, 2: 100, 3: 50}


def now_ns():
    return time.monotonic_ns()


def run(*args, input=None, check=True):
    """Runs a command; its stdout. Raises with its stderr on failure."""
    p = subprocess.run(args, input=input, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError("`%s` failed (%d): %s" % (" ".join(args), p.returncode, p.stderr.strip()))
    return p.stdout


# ---------------------------------------------------------------------------
# Inside the namespaces: the service and the client
# ---------------------------------------------------------------------------


def serve(name):
    """Answers every connection to SERVICE_PORT with NAME and a newline."""
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("0.0.0.0", SERVICE_PORT))
    lst.listen(512)
    answer = (name + "\n").encode()
    while True:
        try:
            conn, _ = lst.accept()
        except OSError:
            time.sleep(POLL)
            continue
        try:
            conn.sendall(answer)
        except OSError:
            pass
        conn.close()


def client(vip):
    """Connects to VIP:SERVICE_PORT every ASK_EVERY without waiting for
    the earlier connections, and writes one line per answer on stdout:
    `A SENT_NS DONE_NS HOST`, or `F SENT_NS DONE_NS` for none."""
    sel = selectors.DefaultSelector()
    out = sys.stdout
    flights = {}  # socket -> (sent_ns, bytearray)
    nxt = now_ns()
    every, limit = int(ASK_EVERY * 1e9), int(ASK_TIMEOUT * 1e9)

    def done(s, ok, host=None):
        sent, _ = flights.pop(s)
        sel.unregister(s)
        s.close()
        if ok:
            out.write("A %d %d %d\n" % (sent, now_ns(), host))
        else:
            out.write("F %d %d\n" % (sent, now_ns()))

    while True:
        t = now_ns()
        if t >= nxt:
            nxt = t + every
            if len(flights) < MAX_IN_FLIGHT:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex((vip, SERVICE_PORT))
                flights[s] = (t, bytearray())
                sel.register(s, selectors.EVENT_READ)
            else:
                out.write("F %d %d\n" % (t, t))
        for s in [s for s, (sent, _) in flights.items() if t - sent >= limit]:
            done(s, False)
        wake = min([nxt] + [sent + limit for sent, _ in flights.values()])
        for key, _ in sel.select(max(0, wake - now_ns()) / 1e9):
            s = key.fileobj
            try:
                data = s.recv(MAX_ANSWER)
            except BlockingIOError:
                continue
            except OSError:
                done(s, False)
                continue
            if data:
                flights[s][1].extend(data)
                if len(flights[s][1]) > MAX_ANSWER:
                    done(s, False)
                continue
            text = flights[s][1].decode(errors="replace").strip()
            if text.startswith("h") and text[1:].isdigit():
                done(s, True, int(text[1:]))
            else:
                done(s, False)
        out.flush()


# ---------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------


class Lab:
    """The namespaces of one configuration, case number c: 10.117.c.0/24."""

    def __init__(self, tag, c):
        self.prefix = "bossd-%d-%s" % (os.getpid(), tag)
        self.c = c
        self.made = []
        self.add_ns(self.ns("br"))
        run("ip", "-n", self.ns("br"), "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.ns("br"), "link", "set", "br0", "up")
        for h in HOSTS:
            self.add_host(h)
        self.plug("vcl", self.ns("cl"), CLIENT_HOST)

    def ns(self, what):
        return "%s-%s" % (self.prefix, what)

    def host_ns(self, h):
        return self.ns("h%d" % h)

    def ip(self, n):
        return "%s.%d.%d" % (NET, self.c, n)

    def vip(self):
        return self.ip(VIP_HOST)

    def mac(self, n):
        return "02:00:0a:75:%02x:%02x" % (self.c, n)

    def add_ns(self, name):
        run("ip", "netns", "add", name)
        self.made.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def plug(self, port, ns, n):
        self.add_ns(ns)
        br = self.ns("br")
        run("ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", br, "link", "set", port, "master", "br0")
        run("ip", "-n", br, "link", "set", port, "up")
        run("ip", "-n", ns, "link", "set", "eth0", "address", self.mac(n))
        run("ip", "-n", ns, "addr", "add", "%s/24" % self.ip(n), "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")

    def add_host(self, h):
        self.plug("vh%d" % h, self.host_ns(h), h)

    def remove_host(self, h):
        # The link first: the killed processes' connections, their FINs
        # held back by the cut, keep a deleted namespace alive in the
        # kernel until they time out, and its veth with it.
        run("ip", "-n", self.ns("br"), "link", "del", "vh%d" % h)
        ns = self.host_ns(h)
        run("ip", "netns", "del", ns)
        self.made.remove(ns)

    def cut(self, h):
        port = "vh%d" % h
        rules = (
            "table bridge %s {\n"
            "\tchain forward { type filter hook forward priority 0; policy accept; "
            'iifname "%s" drop; oifname "%s" drop; }\n'
            "}\n" % (CUT_TABLE, port, port)
        )
        run("ip", "netns", "exec", self.ns("br"), "nft", "-f", "-", input=rules)

    def heal(self):
        run("ip", "netns", "exec", self.ns("br"), "nft", "delete", "table", "bridge", CUT_TABLE)

    def exists(self, h):
        return self.host_ns(h) in self.made

    def holds_vip(self, h):
        if not self.exists(h):
            return False
        shown = run("ip", "-n", self.host_ns(h), "-o", "addr", "show", "dev", "eth0")
        return (" %s/" % self.vip()) in shown

    def pids(self, h):
        if not self.exists(h):
            return []
        return [int(p) for p in run("ip", "netns", "pids", self.host_ns(h)).split()]

    def destroy(self):
        for ns in reversed(self.made):
            for pid in run("ip", "netns", "pids", ns, check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for ns in reversed(self.made):
            run("ip", "netns", "del", ns, check=False)
        self.made = []


# ---------------------------------------------------------------------------
# The systems under test
# ---------------------------------------------------------------------------


class Bossd:
    """bossd with contrib/vip-hook.sh, every host joining the other two."""

    def __init__(self, binary, hook, heartbeat, timeout):
        self.binary, self.hook = binary, hook
        self.heartbeat, self.timeout = heartbeat, timeout
        self.name = "bossd %d/%d" % (heartbeat, timeout)

    def period(self):
        return self.heartbeat / 1000

    def command(self, lab, h):
        cmd = [self.binary, lab.ip(h), str(BOSSD_PORT), "--no-console", "--no-preempt",
               "--heartbeat", str(self.heartbeat), "--timeout", str(self.timeout),
               "--check", self.check, "--check-interval", str(CHECK_INTERVAL * 1000),
               "--notify", "VIP=%s/24 VIP_IFACE=eth0 exec '%s'" % (lab.vip(), self.hook)]
        for o in HOSTS:
            if o != h:
                cmd += ["--join", "%s:%d" % (lab.ip(o), BOSSD_PORT)]
        return cmd

    def settled(self, lab, running, holder):
        """Whether every running node agrees on one master."""
        masters = set()
        for h in running:
            out = run("ip", "netns", "exec", lab.ns("cl"), self.binary, "ctl",
                      lab.ip(h), str(BOSSD_PORT), "-s", check=False)
            fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
            if fields.get("role") not in ("master", "follower"):
                return False
            masters.add(fields.get("master"))
        return len(masters) == 1


class Keepalived:
    """keepalived's VRRP alone (-P), one instance, VRRPv3 (v2 takes whole
    seconds only), priorities 150/100/50, preempting (the default)."""

    def __init__(self, advert, work):
        self.advert, self.work = advert, work
        self.name = "keepalived %gs" % advert

    def period(self):
        return self.advert

    def command(self, lab, h):
        conf = os.path.join(self.work, "%s-h%d.conf" % (lab.prefix, h))
        with open(conf, "w") as f:
            f.write(
                "global_defs {\n  router_id h%d\n  vrrp_version 3\n"
                "  script_user root\n  enable_script_security\n}\n"
                "vrrp_script service {\n  script \"%s\"\n"
                "  interval %d\n  fall 1\n  rise 1\n}\n"
                "vrrp_instance vip {\n  state BACKUP\n  interface eth0\n"
                "  virtual_router_id 51\n  priority %d\n  advert_int %g\n"
                "  track_script {\n    service\n  }\n"
                "  virtual_ipaddress {\n    %s/24 dev eth0\n  }\n}\n"
                % (h, self.check, CHECK_INTERVAL, KEEPALIVED_PRIORITY[h],
                   self.advert, lab.vip())
            )
        base = os.path.join(self.work, "%s-h%d" % (lab.prefix, h))
        return ["keepalived", "-n", "-l", "-D", "-P", "-f", conf,
                "-p", base + ".pid", "-r", base + ".vrrp.pid"]

    def settled(self, lab, running, holder):
        """Whether the VIP is where preemption leaves it: on the running
        host of the highest priority. A restarted instance starts as a
        backup and takes over only when its master-down timer (3 adverts
        and a skew) runs out."""
        return holder == max(running, key=KEEPALIVED_PRIORITY.get)


# ---------------------------------------------------------------------------
# One configuration: a lab, its processes, the client's record
# ---------------------------------------------------------------------------


class Bench:
    def __init__(self, system, tag, c, work, script):
        self.system, self.work, self.script = system, work, script
        self.lab = Lab(tag, c)
        self.services, self.daemons = {}, {}
        self.answers, self.lock = [], threading.Lock()
        for h in HOSTS:
            self.start_service(h)
        self.client = self.spawn(self.lab.ns("cl"), [sys.executable, script, "client", self.lab.vip()],
                                 "client", stdout=subprocess.PIPE)
        threading.Thread(target=self.read_client, daemon=True).start()
        for h in HOSTS:
            self.start_daemon(h)
            time.sleep(0.2)  # bossd: each host older than the next

    def spawn(self, ns, cmd, log, stdout=None):
        err = open(os.path.join(self.work, "%s-%s.log" % (self.lab.prefix, log)), "a")
        return subprocess.Popen(["ip", "netns", "exec", ns] + cmd, stdin=subprocess.DEVNULL,
                                stdout=stdout or err, stderr=err, start_new_session=True, text=True)

    def start_service(self, h):
        self.services[h] = self.spawn(self.lab.host_ns(h), [sys.executable, self.script, "serve", "h%d" % h],
                                      "service-h%d" % h)

    def start_daemon(self, h):
        self.daemons[h] = self.spawn(self.lab.host_ns(h), self.system.command(self.lab, h), "h%d" % h)

    def read_client(self):
        for line in self.client.stdout:
            w = line.split()
            if w[0] == "A":
                with self.lock:
                    self.answers.append((int(w[1]), int(w[2]), int(w[3])))

    def answers_since(self, t):
        with self.lock:
            return [a for a in self.answers if a[1] >= t]

    def daemon_pids(self, h):
        svc = self.services.get(h)
        return [p for p in self.lab.pids(h) if svc is None or p != svc.pid]

    def signal(self, h, sig):
        self.kill_all(self.daemon_pids(h), sig)

    def settle(self):
        """Waits until one host holds the VIP, no host runs anything but
        its daemon and service (no hook), the daemons agree, and the
        client was answered by that host only for QUIET and three
        periods. Returns that host."""
        end = time.monotonic() + SETTLE_DEADLINE
        quiet = int(max(QUIET, 3 * self.system.period()) * 1e9)
        while time.monotonic() < end:
            for h, p in self.daemons.items():
                if p.poll() is not None:
                    raise RuntimeError("%s on h%d exited (%s); logs in %s"
                                       % (self.system.name, h, p.returncode, self.work))
            holders = [h for h in HOSTS if self.lab.holds_vip(h)]
            running = [h for h in HOSTS if h in self.daemons]
            if (len(holders) == 1 and all(len(self.daemon_pids(h)) <= self.expected_pids() for h in running)
                    and self.system.settled(self.lab, running, holders[0])):
                m = holders[0]
                t = now_ns()
                time.sleep(quiet / 1e9)
                got = self.answers_since(t)
                if got and all(a[2] == m for a in got) and self.lab.holds_vip(m) \
                        and [h for h in HOSTS if self.lab.holds_vip(h)] == [m]:
                    return m
            time.sleep(POLL)
        raise RuntimeError("%s did not settle within %ds; logs in %s"
                           % (self.system.name, SETTLE_DEADLINE, self.work))

    def expected_pids(self):
        # keepalived: its parent and the VRRP child; bossd: itself.
        return 2 if isinstance(self.system, Keepalived) else 1

    def idle_cpu(self, secs):
        """Percent of a core each host's daemon processes used over secs,
        the client paused."""
        os.killpg(self.client.pid, signal.SIGSTOP)
        try:
            def cpu(h):
                total = 0
                for pid in self.daemon_pids(h):
                    try:
                        with open("/proc/%d/schedstat" % pid) as f:
                            total += int(f.read().split()[0])
                    except OSError:
                        pass
                return total
            before = {h: cpu(h) for h in HOSTS}
            t = now_ns()
            time.sleep(secs)
            span = now_ns() - t
            return [100.0 * (cpu(h) - before[h]) / span for h in HOSTS]
        finally:
            os.killpg(self.client.pid, signal.SIGCONT)

    # --- faults: each returns the fault's instant; restore undoes it ------

    @staticmethod
    def kill_all(pids, sig):
        """Sends sig to each pid; one that ended since it was listed (a
        script keepalived or a hook ran, done meanwhile) is skipped."""
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def fault(self, kind, h):
        if kind == "crash":
            pids = self.daemon_pids(h)
            t = now_ns()
            self.kill_all(pids, signal.SIGKILL)
            self.daemons.pop(h).wait()
            gone(pids)
        elif kind == "power":
            self.lab.cut(h)
            t = now_ns()
            pids = self.lab.pids(h)
            self.kill_all(pids, signal.SIGKILL)
            self.daemons.pop(h).wait()
            self.services.pop(h).wait()
            gone(pids)
            self.lab.remove_host(h)
        elif kind == "freeze":
            pids = self.daemon_pids(h)
            t = now_ns()
            self.kill_all(pids, signal.SIGSTOP)
        elif kind == "check":
            t = now_ns()
            self.services[h].kill()
            self.services.pop(h).wait()
        elif kind == "handover":
            t = now_ns()
            if isinstance(self.system, Keepalived):
                pids = self.daemon_pids(h)
                self.daemons[h].send_signal(signal.SIGTERM)
                self.daemons.pop(h).wait()
                gone(pids)
            else:
                run("ip", "netns", "exec", self.lab.ns("cl"), self.system.binary, "ctl",
                    self.lab.ip(h), str(BOSSD_PORT), "-handover")
        return t

    def restore(self, kind, h):
        if kind == "crash":
            self.start_daemon(h)
        elif kind == "power":
            self.lab.heal()
            self.lab.add_host(h)
            self.start_service(h)
            self.start_daemon(h)
        elif kind == "freeze":
            self.signal(h, signal.SIGCONT)
        elif kind == "check":
            self.start_service(h)
        elif kind == "handover" and isinstance(self.system, Keepalived):
            self.start_daemon(h)

    def one_run(self, kind):
        """One fault: the failover time in ms (None when no other host
        answered in time), and whether the old host answered a request
        sent after the new master first answered, before the restore."""
        m = self.settle()
        time.sleep(random.uniform(0, self.system.period()))
        t = self.fault(kind, m)
        end = time.monotonic() + FAILOVER_DEADLINE
        first = None
        while first is None and time.monotonic() < end:
            time.sleep(POLL)
            new = [a for a in self.answers_since(t) if a[2] != m]
            if new:
                first = min(new, key=lambda a: a[1])
        if first is not None:
            # Give a late answer from the old host its chance to show.
            time.sleep(0.2)
            back = any(a[2] == m and a[0] >= first[1] for a in self.answers_since(first[1]))
        self.restore(kind, m)
        if first is None:
            return None, False
        if kind == "handover":
            # The gap: from the last request the old host answered to the
            # first the new one answered, both by when they were sent.
            old = [a[0] for a in self.answers_since(t - int(1e9)) if a[2] == m and a[0] <= first[0]]
            return (first[0] - max(old, default=t)) / 1e6, back
        return (first[1] - t) / 1e6, back

    def close(self):
        for p in [self.client] + list(self.daemons.values()) + list(self.services.values()):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        self.lab.destroy()


def gone(pids):
    """Waits until the killed processes are reaped: keepalived refuses to
    start while the pid in its VRRP child's pid file still exists."""
    end = time.monotonic() + SETTLE_DEADLINE
    while any(os.path.exists("/proc/%d" % p) for p in pids):
        if time.monotonic() > end:
            raise RuntimeError("processes %s outlived SIGKILL" % pids)
        time.sleep(POLL)


# ---------------------------------------------------------------------------
# The run and its tables
# ---------------------------------------------------------------------------


def pct(sorted_ms, p):
    """Nearest rank; with fewer than 100 samples p99 is the largest."""
    if not sorted_ms:
        return float("nan")
    k = max(1, -(-p * len(sorted_ms) // 100))
    return sorted_ms[k - 1]


def measure(system, tag, c, args, runs):
    bench = Bench(system, tag, c, args.work, os.path.abspath(__file__))
    try:
        bench.settle()
        cpu = bench.idle_cpu(args.idle)
        result = {"cpu": cpu}
        for kind in args.faults:
            times, lost, back = [], 0, 0
            for i in range(runs):
                ms, was_back = bench.one_run(kind)
                if ms is None:
                    lost += 1
                else:
                    times.append(ms)
                back += was_back
                print("  %s %s %d/%d: %s" % (system.name, kind, i + 1, runs,
                                             "lost" if ms is None else "%.1f ms" % ms),
                      file=sys.stderr, flush=True)
            result[kind] = (sorted(times), lost, back)
        return result
    finally:
        bench.close()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve").add_argument("name")
    sub.add_parser("client").add_argument("vip")
    b = sub.add_parser("bench")
    b.add_argument("--bossd", required=True)
    b.add_argument("--hook", required=True)
    b.add_argument("--work", required=True)
    b.add_argument("--runs", type=int, default=15)
    b.add_argument("--runs-slow", type=int, default=10, help="runs for keepalived at 1 s")
    b.add_argument("--idle", type=float, default=10.0)
    b.add_argument("--timings", default="100,500 100,250 50,150")
    b.add_argument("--adverts", default="1 0.1")
    b.add_argument("--faults", default="crash,power,freeze,check,handover")
    args = ap.parse_args()
    if args.cmd == "serve":
        return serve(args.name)
    if args.cmd == "client":
        return client(args.vip)
    args.faults = args.faults.split(",")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    systems = [Bossd(args.bossd, args.hook, *map(int, t.split(","))) for t in args.timings.split()]
    systems += [Keepalived(float(a), args.work) for a in args.adverts.split()]
    check = os.path.join(args.work, "check.sh")
    with open(check, "w") as f:
        f.write(CHECK)
    os.chmod(check, 0o755)
    for system in systems:
        system.check = check
    results = []
    for i, system in enumerate(systems):
        runs = args.runs_slow if isinstance(system, Keepalived) and system.advert >= 1 else args.runs
        print("%s: %d runs of each fault ..." % (system.name, runs), file=sys.stderr, flush=True)
        results.append((system, runs, measure(system, "kv%d" % i, i + 1, args, runs)))
    report(results, args.faults)


def table(title, header, rows):
    """Prints a Markdown table under a heading."""
    print()
    print("### " + title)
    print()
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def report(results, faults):
    def cell(r, kind):
        times, lost, _ = r[kind]
        s = "%.1f / %.1f" % (pct(times, 50), pct(times, 99))
        return s + (" (%d lost)" % lost if lost else "")

    table("Client-seen failover of a virtual IP, 3 hosts: p50 / p99 ms",
          ["system", "runs"] + faults + ["idle CPU % of a core per host"],
          [[s.name, str(runs)] + [cell(r, k) for k in faults] + ["/".join("%.3f" % c for c in r["cpu"])]
           for s, runs, r in results])

    def ratios(kr, br):
        out = []
        for kind in faults:
            b50, k50 = pct(br[kind][0], 50), pct(kr[kind][0], 50)
            out.append("%.1f" % (k50 / b50) if b50 > 0 else "-")
        bc, kc = sum(br["cpu"]) / 3, sum(kr["cpu"]) / 3
        return out + ["%.2f" % (kc / bc) if bc > 0 else "-"]

    table("keepalived / bossd, ratio of medians",
          ["keepalived / bossd"] + faults + ["idle CPU (mean per host)"],
          [["%s / %s" % (ks.name, bs.name)] + ratios(kr, br)
           for ks, _, kr in results if isinstance(ks, Keepalived)
           for bs, _, br in results if isinstance(bs, Bossd)])
    table("Runs in which the old host answered a request sent after the new master's first answer",
          ["system"] + faults,
          [[s.name] + ["%d of %d" % (r[k][2], runs) for k in faults] for s, runs, r in results])
    print()
    for system, runs, r in results:
        for kind in faults:
            print("RESULT system=%s fault=%s p50_ms=%.2f p99_ms=%.2f lost=%d samples=%s"
                  % (system.name.replace(" ", "_"), kind, pct(r[kind][0], 50), pct(r[kind][0], 99),
                     r[kind][1], ",".join("%.1f" % t for t in r[kind][0])))


if __name__ == "__main__":
    sys.exit(main())
