#!/usr/bin/env bash
# Usage: netns-cgroups.sh COMMAND [ARG...]  (as root, under `ip netns exec NS`)
# Runs COMMAND with the machine's cgroup hierarchies mounted under /sys/fs/cgroup again.
# `ip netns exec` gives its command a fresh sysfs without them, and runc (podman's runtime on
# the SSH test hosts, tests/containerimage.py) refuses to create a container without them. Each
# hierarchy PID 1 has mounted (cgroup v1 controllers, named ones, cgroup2) is mounted here with
# the same options, which gives the same hierarchy, not a new one.
set -euo pipefail
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
# /proc/1/mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
while read -r line; do
  read -r -a f <<<"${line%% - *}"
  read -r fstype _ super <<<"${line#* - }"
  mnt=${f[4]}
  [[ "$mnt" == /sys/fs/cgroup/* ]] || continue
  case "$fstype" in
    cgroup)
      opts=${super#rw,}
      opts=${opts#ro,}
      if [[ "$opts" == name=* ]]; then opts="none,$opts"; fi
      mkdir -p "$mnt"
      mount -t cgroup -o "$opts" cgroup "$mnt"
      ;;
    cgroup2)
      mkdir -p "$mnt"
      mount -t cgroup2 cgroup2 "$mnt"
      ;;
  esac
done </proc/1/mountinfo
exec "$@"
