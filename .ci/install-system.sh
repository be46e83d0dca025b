#!/usr/bin/env bash
# System packages the tests drive for real: sshd hosts in network namespaces, a Slurm cluster
# with munge, shellcheck, systemd-analyze, systemd-nspawn hosts (mmdebstrap builds their rootfs),
# podman with runc (containers on the SSH hosts) and the docker CLI (its `run --help` checks argv).
# Idempotent; skips apt when everything is present.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(openssh-server openssh-client iproute2 slurm-wlm munge shellcheck systemd procps psmisc curl
      rsync mmdebstrap systemd-container util-linux podman runc catatonit docker.io)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== apt: ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "== system packages present: ${PKGS[*]}"
