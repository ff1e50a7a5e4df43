#!/usr/bin/env bash
# Tries the README's set-up as a newcomer would, on a fresh Debian 12:
# debootstraps bookworm (minbase) into DIR, clones this repository's
# committed HEAD into it, and runs, as root inside it, exactly the README's
# steps followed by the make targets given (default: test).
#
#   test/scripts/try-readme.sh [-d DIR] [-k] [TARGET...]
#
# -k keeps DIR for another try (the second run skips debootstrap and the
# package installs, but still runs the targets from a fresh clone).
# Needs root, debootstrap (installed if missing) and Debian's mirror and the
# Go module proxy. Behind a TLS-intercepting proxy, the CA certificates in
# /usr/local/share/ca-certificates are copied in (a real fresh machine on
# such a network needs the same).
set -euo pipefail
dir=/var/tmp/tandem-fresh
keep=0
while getopts "d:k" o; do
  case $o in
    d) dir=$OPTARG ;;
    k) keep=1 ;;
    *) echo "usage: $0 [-d DIR] [-k] [TARGET...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND-1))
targets=("${@:-test}")
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
root=$dir/root

cleanup() {
  for m in src run dev sys proc; do umount -R "$root/$m" 2>/dev/null || true; done
  umount "$root" 2>/dev/null || true
  [ "$keep" = 1 ] || rm -rf "$dir"
}
trap cleanup EXIT

command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
if [ ! -x "$root/bin/bash" ]; then
  mkdir -p "$dir"
  echo "try-readme: debootstrap bookworm into $root"
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$dir/debootstrap.log" 2>&1
fi
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
rm -rf "$dir/src" && mkdir -p "$dir/src"
git clone -q --bare "$repo" "$dir/src/tandem.git"

# A chroot's / must be a mount point for `ip netns exec` (it remounts / as
# a slave), as it is on a real machine.
mountpoint -q "$root" || mount --bind "$root" "$root"
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
mountpoint -q "$root/sys" || mount --rbind /sys "$root/sys"
mountpoint -q "$root/dev" || mount --rbind /dev "$root/dev"
mountpoint -q "$root/run" || mount -t tmpfs tmpfs "$root/run"
mkdir -p "$root/src" && { mountpoint -q "$root/src" || mount --bind "$dir/src" "$root/src"; }
cp /etc/resolv.conf "$root/etc/resolv.conf"

steps="set -e
update-ca-certificates >/dev/null 2>&1 || true
# README: the only manual step
apt-get update -q >/dev/null && apt-get install -y -q git make >/dev/null
rm -rf /root/tandem && git clone -q /src/tandem.git /root/tandem && cd /root/tandem"
for t in "${targets[@]}"; do steps+=$'\n'"echo '== make $t'; make $t"; done
chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -c "$steps"
echo "try-readme: ${targets[*]}: passed on a fresh Debian 12"
