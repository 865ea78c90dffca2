#!/bin/sh
# vip-hook.sh: a bossd --notify hook that moves a virtual IP with the master.
#
#   bossd 192.0.2.11 7000 --join 192.0.2.12:7000 --notify /usr/libexec/bossd/vip-hook.sh
#
# bossd runs it with `sh -c` on every change of this node's role, one at a
# time and in order (docs/GUARANTEES.md, hook), with:
#   BOSSD_ROLE       the new role: master, follower or none
#   BOSSD_PREV_ROLE  the role before
#   BOSSD_MASTER     the master's IP:PORT, or - when none is known
#   BOSSD_EPOCH      the master's epoch, larger for every new master
#   BOSSD_ID         this node's IP:PORT
#   BOSSD_CAUSE      why, as in the journal (-j)
#
# On becoming master it adds the address to the interface and announces it
# with gratuitous ARP, so neighbours and switches send its traffic here at
# once instead of when their ARP entries expire. On any other role (a
# follower, or none: alone or below quorum, where another group may elect
# a master) it removes the address. It does only what is missing, so
# running it twice, or with a role it already has, changes nothing.
#
# It needs CAP_NET_ADMIN for `ip addr` and CAP_NET_RAW for arping: run
# bossd as root, or see contrib/bossd.service. Output goes to bossd's log.

set -eu

# The virtual IP with its prefix length, and the interface it lives on.
# The environment (e.g. /etc/bossd/bossd.env) may set them instead.
VIP="${VIP:-192.0.2.100/24}"
IFACE="${VIP_IFACE:-eth0}"
# Gratuitous ARPs sent on becoming master, one a second; the first goes
# out at once, and arping returns a second after the last (about 2 s for
# 2). bossd runs hooks one at a time, so a long announcement delays the
# next change's hook.
ARP_COUNT=2

ADDR="${VIP%/*}"
ROLE="${BOSSD_ROLE:?run by bossd --notify, which sets BOSSD_ROLE}"

say() {
    echo "vip-hook: $*" >&2
}

# Whether $ADDR is on $IFACE now.
have_vip() {
    ip -o addr show dev "$IFACE" | grep -Fq " $ADDR/"
}

announce() {
    case "$ADDR" in
    *:*)
        # IPv6 has no ARP; the kernel sends neighbour advertisements
        # itself when the address comes up.
        return 0
        ;;
    esac
    if ! command -v arping >/dev/null 2>&1; then
        say "no arping: neighbours learn $ADDR when their ARP entries expire"
        return 0
    fi
    # A gratuitous ARP is a broadcast "who-has $ADDR tell $ADDR" from this
    # interface's MAC: every neighbour that knows $ADDR updates its entry.
    if arping -V 2>&1 | grep -q iputils; then
        # iputils (Debian's iputils-arping): -U sends from $ADDR itself.
        arping -q -U -c "$ARP_COUNT" -I "$IFACE" "$ADDR" || say "arping failed"
    else
        # Thomas Habets' arping (Debian's arping) sends from the
        # interface's first address unless told -S, which would announce
        # that address instead of $ADDR. It exits 1 when nothing replied,
        # which is all an unsolicited ARP ever gets; its errors still
        # reach stderr with -q.
        arping -q -U -c "$ARP_COUNT" -S "$ADDR" -i "$IFACE" "$ADDR" || :
    fi
}

case "$ROLE" in
master)
    if have_vip; then
        say "epoch ${BOSSD_EPOCH:-?}: $ADDR already on $IFACE"
    else
        ip addr add "$VIP" dev "$IFACE"
        say "epoch ${BOSSD_EPOCH:-?}: added $VIP to $IFACE (${BOSSD_PREV_ROLE:-?} -> master, ${BOSSD_CAUSE:-?})"
    fi
    # Announce even when the address was already here: the switch may
    # still point at the previous master.
    announce
    ;;
follower | none)
    if have_vip; then
        ip addr del "$VIP" dev "$IFACE"
        say "epoch ${BOSSD_EPOCH:-?}: removed $VIP from $IFACE (${BOSSD_PREV_ROLE:-?} -> $ROLE, master ${BOSSD_MASTER:--})"
    fi
    ;;
*)
    say "unknown BOSSD_ROLE=$ROLE; nothing done"
    exit 2
    ;;
esac
