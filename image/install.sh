#!/bin/bash
# image/install.sh ROOT: installs tandemd, tandemctl, the systemd unit and
# an example configuration into the file tree ROOT of an appliance or VM
# image (a mounted image, a debootstrap directory, or / for a plain host).
# It builds the binaries from this checkout. It never overwrites an
# existing configuration or pair key.
set -euo pipefail
root=${1:?usage: image/install.sh ROOT}
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(git -C "$here" describe --always --dirty 2>/dev/null || echo dev)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "-X github.com/tandem-ha/tandem/internal/daemon.Version=$version" -o "$tmp/tandemd" ./cmd/tandemd)
(cd "$here" && CGO_ENABLED=0 go build -trimpath -o "$tmp/tandemctl" ./cmd/tandemctl)
install -D -m 0755 "$tmp/tandemd" "$root/usr/sbin/tandemd"
install -D -m 0755 "$tmp/tandemctl" "$root/usr/bin/tandemctl"
install -D -m 0644 "$here/image/tandemd.service" "$root/lib/systemd/system/tandemd.service"
install -D -m 0644 "$here/README.md" "$root/usr/share/doc/tandem/README.md"
install -D -m 0644 "$here/docs/configuration.md" "$root/usr/share/doc/tandem/configuration.md"
install -d -m 0700 "$root/etc/tandem" "$root/var/lib/tandem"
if [ ! -e "$root/etc/tandem/tandemd.yaml.example" ]; then
	awk '/^```yaml$/{f=1;next} /^```$/{if(f){exit}} f' "$here/docs/configuration.md" > "$root/etc/tandem/tandemd.yaml.example"
fi
echo "installed tandemd $version into $root"
echo "next: write /etc/tandem/tandemd.yaml (see tandemd.yaml.example), 'tandemd keygen' on one node and copy the key to the other, 'systemctl enable --now tandemd'"
