#!/usr/bin/env python3
"""An authenticated bossd console client in 50 lines of standard Python.

    python3 contrib/bossd_auth.py IP PORT SECRET_FILE COMMAND...

It speaks the handshake of docs/PROTOCOL.md ("Authentication") with
nothing but hmac and hashlib, so the protocol can be checked against an
implementation that shares no code with bossd (tests/hostile.rs does), and
so scripts without the bossd binary can run mutating commands. It prints
every line it sends (>) and receives (<), then exits 0 on OK, 1 on ERR.
"""
import hashlib
import hmac
import os
import socket
import sys


def main(ip, port, secret_file, *command):
    secret = open(secret_file, "rb").read().rstrip(b"\r\n")
    h = lambda key, msg: hmac.new(key, msg, hashlib.sha256).digest()
    conn = socket.create_connection((ip, int(port)), timeout=5)
    f = conn.makefile("rwb")

    def send(line):
        print(">", line)
        f.write(line.encode() + b"\n")
        f.flush()

    def recv():
        line = f.readline().decode().rstrip("\r\n")
        print("<", line)
        if not line:
            sys.exit("connection closed")
        return line

    nd = os.urandom(32)
    # The node we mean, as IP:PORT ([v6]:port); the proofs cover it.
    target = ("[%s]:%s" if ":" in ip else "%s:%s") % (ip, port)
    send("AUTH bossd/1 " + nd.hex() + " " + target)
    words = recv().split(" ")
    if words[0] != "AUTH":
        sys.exit("refused: " + " ".join(words[1:]))
    na = bytes.fromhex(words[2])
    if not hmac.compare_digest(h(secret, b"bossd/1 acceptor" + nd + na + target.encode()).hex(), words[3]):
        send("REFUSE wrong secret")
        sys.exit("the node has another secret")
    send("PROOF " + h(secret, b"bossd/1 dialer" + nd + na + target.encode()).hex())
    key = h(secret, b"bossd/1 session" + nd + na + target.encode())
    seq = {"d": 0, "a": 0}

    def tag(direction, line):
        mac = h(key, direction.encode() + seq[direction].to_bytes(8, "big") + line.encode())
        seq[direction] += 1
        return mac[:16].hex()

    line = " ".join(command)
    send(tag("d", line) + " " + line)
    while True:
        got_tag, _, line = recv().partition(" ")
        if not hmac.compare_digest(got_tag, tag("a", line)):
            sys.exit("an answer line failed authentication")
        if line == "OK" or line.startswith("ERR"):
            return 0 if line == "OK" else 1


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
