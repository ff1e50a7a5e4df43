#!/bin/bash
# bench-wip-lab.sh [WIPBENCH FLAGS...]: wipbench with the replication across
# a real link. The primary (and the local-only store) runs in the lab's
# host a, every receiver in host b, over the lab's HA link (veth pairs
# through a bridge, 198.51.100.1 -> .2); see test/lab/doc.go. Same machine,
# CPUs and disk as `make bench-wip`, so it measures what the link path
# adds to loopback; with two machines, run wipbench with
# -receiver-via "ssh -T root@PEER /path/wipbench" and -listen-ip instead.
# Needs root. The lab is removed at the end, however the bench ends.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "bench-wip-lab: needs root (network namespaces)" >&2; exit 1; }
GO=${GO:-go}
tmp=$(mktemp -d /tmp/wipbench-lab.XXXXXX)
prefix=
cleanup() {
	if [ -n "$prefix" ]; then "$tmp/tdlab" down -p "$prefix" >/dev/null 2>&1 || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
$GO build -o "$tmp/wipbench" ./wip/cmd/wipbench
$GO build -o "$tmp/tdlab" ./test/lab/cmd/tdlab
"$tmp/tdlab" sweep >/dev/null
prefix=$("$tmp/tdlab" up -ha 1 2>/dev/null | sed -n 's/^lab \(tdl[0-9a-f]*\) is up.*/\1/p')
[ -n "$prefix" ] || { echo "bench-wip-lab: the lab did not come up" >&2; exit 1; }
echo "bench-wip-lab: lab $prefix: primary in $prefix-a (198.51.100.1), receivers in $prefix-b over ha1"
ip netns exec "$prefix-a" "$tmp/wipbench" -dir "$tmp/a" -listen-ip 198.51.100.1 \
	-receiver-via "ip netns exec $prefix-b $tmp/wipbench" -peer-root "$tmp/b" "$@"
