#!/usr/bin/env bash
# Installs what `make test` needs and a fresh Debian 12 machine lacks, and
# only that: each piece is checked first and installed only when missing.
# Run as root. Idempotent; prints one line per thing it installs.
set -euo pipefail

GO_VERSION=1.26.8
# SHA-256 of golang.org/toolchain@v0.0.1-go${GO_VERSION}.linux-amd64.zip as
# served by the Go module proxy (the same bytes `go` itself would fetch
# with GOTOOLCHAIN and check against sum.golang.org).
GO_ZIP_SHA256=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7

# command -> Debian package that provides it
declare -A want=(
  [ip]=iproute2
  [nft]=nftables
  [iptables]=iptables
  [ip6tables]=iptables
  [ping]=iputils-ping
  [tcpdump]=tcpdump
  [curl]=curl
  [unzip]=unzip
  [git]=git
  [gcc]=gcc
)

missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
# CA certificates for the module proxy.
[ -e /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
# C library headers: the race detector builds with cgo (gcc alone is not enough).
[ -e /usr/include/errno.h ] || missing+=(libc6-dev)

if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: $pkgs; run as root (or: apt-get install $pkgs)" >&2
    exit 1
  fi
  echo "deps: installing $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $pkgs >/dev/null
fi

# Go: the one in PATH or /usr/local/go if it is new enough, else the
# toolchain from the module proxy into /usr/local/go.
go_ok() {
  local v
  v=$("$1" env GOVERSION 2>/dev/null) || return 1
  v=${v#go}
  # Compare major.minor against 1.26.
  local major=${v%%.*} rest=${v#*.}
  local minor=${rest%%.*}
  [ "$major" -gt 1 ] || { [ "$major" -eq 1 ] && [ "${minor%%[!0-9]*}" -ge 26 ]; }
}
if ! { command -v go >/dev/null 2>&1 && go_ok go; } && ! { [ -x /usr/local/go/bin/go ] && go_ok /usr/local/go/bin/go; }; then
  if [ -e /usr/local/go ]; then
    echo "deps: /usr/local/go exists but holds no Go >= 1.26; move it aside and rerun" >&2
    exit 1
  fi
  echo "deps: installing Go ${GO_VERSION} into /usr/local/go"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL -o "$tmp/go.zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go${GO_VERSION}.linux-amd64.zip"
  echo "${GO_ZIP_SHA256}  $tmp/go.zip" | sha256sum -c --quiet -
  unzip -q "$tmp/go.zip" -d "$tmp"
  mv "$tmp/golang.org/toolchain@v0.0.1-go${GO_VERSION}.linux-amd64" /usr/local/go
  chmod +x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/* 2>/dev/null || true
fi

# FUSE, for the lab's hung-disk tests (test/lab/hangfs): the kernel's fuse
# module. Nothing to install from Debian (hangfs mounts with mount(2));
# load the module if /dev/fuse is not there yet. If it cannot be loaded,
# those tests say so (and fail under CI=true).
if [ ! -e /dev/fuse ] && [ "$(id -u)" -eq 0 ] && command -v modprobe >/dev/null 2>&1; then
  echo "deps: loading the fuse kernel module"
  modprobe fuse || echo "deps: modprobe fuse failed; the hung-disk lab tests need /dev/fuse" >&2
fi
