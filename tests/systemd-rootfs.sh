#!/usr/bin/env bash
# Build (once) the Debian rootfs the systemd test hosts boot: systemd as PID 1, dbus, sshd,
# python3, iproute2; a non-root user `alice` (uid 1000, password "*": no password, not locked;
# key login like root) whose ssh sessions are logind sessions (libpam-systemd: XDG_RUNTIME_DIR,
# her user manager; `systemctl --user` works without a D-Bus session bus, over the manager's
# private socket; units outlive her sessions once root runs `loginctl enable-linger alice`); a
# persistent journal (/var/log/journal; only then journald writes her user-1000.journal, which
# `journalctl --user` reads); /root traversable (0711) so alice can run an interpreter
# bind-mounted below it (tests/systemdhosts.py: python_binds). No docs, man pages or locales.
# Usage: build_rootfs.sh DEST
# DEST is the cache directory chosen by the caller (CI: .cache/systemd-rootfs-<hash of this
# script>); when DEST/.sgl-gen-rootfs exists it is reused as is. The build goes to a temporary
# sibling directory renamed onto DEST at the end, so an interrupted build never leaves a
# half-made DEST. The rootfs is key-independent: the harness bind-mounts each host's sshd host
# key, the client's authorized_keys and /etc/hosts at boot (/etc/sgl-gen-test).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS="systemd,systemd-sysv,dbus,libpam-systemd,openssh-server,python3,iproute2"
dest=${1:?usage: build_rootfs.sh DEST}
dest=$(realpath -m "$dest")
if [[ -e "$dest/.sgl-gen-rootfs" ]]; then
  echo "== rootfs: reusing $dest"
  exit 0
fi
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if ((${#need[@]})); then
  echo "== apt: ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# shellcheck source=/dev/null
. /etc/os-release
suite=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
# the machine's own Debian sources (same mirror, same security updates); else mmdebstrap's default
mirror=()
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
  mirror=(/etc/apt/sources.list.d/debian.sources)
elif [[ -f /etc/apt/sources.list ]]; then
  mirror=(/etc/apt/sources.list)
fi
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d "$dest.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
# shellcheck disable=SC2016 # the hooks' "$1" is expanded by mmdebstrap, not here
mmdebstrap --quiet --variant=apt --include="$PKGS" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='mkdir -p "$1"/etc/sgl-gen-test' \
  --customize-hook='printf "%s\n" \
      "HostKey /etc/sgl-gen-test/ssh_host_ed25519_key" \
      "AuthorizedKeysFile /etc/sgl-gen-test/authorized_keys .ssh/authorized_keys" \
      "PermitRootLogin prohibit-password" "PasswordAuthentication no" "UseDNS no" \
      "MaxSessions 64" "MaxStartups 64:30:128" > "$1"/etc/ssh/sshd_config.d/sgl-gen-test.conf' \
  --customize-hook='printf "127.0.0.1 localhost\n::1 localhost\n" > "$1"/etc/hosts' \
  --customize-hook=': > "$1"/etc/resolv.conf' \
  --customize-hook=': > "$1"/etc/machine-id' \
  --customize-hook='rm -f "$1"/etc/hostname' \
  --customize-hook='systemctl --root="$1" enable ssh.service' \
  --customize-hook='mkdir -p -m 0700 "$1"/root/.ssh' \
  --customize-hook='chmod 0711 "$1"/root' \
  --customize-hook='chroot "$1" useradd --uid 1000 --user-group --create-home --shell /bin/bash alice' \
  --customize-hook='chroot "$1" usermod --password "*" alice' \
  --customize-hook='mkdir -p "$1"/var/log/journal' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  "$suite" "$tmp" "${mirror[@]}"
touch "$tmp/.sgl-gen-rootfs"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "== rootfs: built $dest in $((SECONDS - start)) s, $(du -sh "$dest" | cut -f1)"
