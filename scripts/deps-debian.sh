#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not installed yet.
# Quick when everything is present; uses apt-get only when something is missing and we are root.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "bty setup: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "bty setup: installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# These packages are tools, not services: keep their maintainer scripts from starting daemons
# (docker-registry's would listen on :5000). invoke-rc.d and deb-systemd-invoke both honour
# policy-rc.d (exit 101 = "do not run"). An existing policy, the admin's or a container's, stays.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# bty setup: installing tools, start no services\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
  trap 'exit 130' INT TERM
fi
apt-get update -qq >&2 || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
# Tests and benchmarks start their own registry, PostgreSQL, nginx, TFTP and DHCP servers on
# private ports or in namespaces; the packaged services must not come up at the next boot either
# (policy-rc.d only stops them starting now). A tftpd-hpa on port 69 would also keep bty-web's
# own TFTP server from starting, and a stray DHCP server must never answer on a real network.
for p in "${missing[@]}"; do
  case "$p" in
    docker-registry | postgresql | nginx | tftpd-hpa | isc-dhcp-server | kea-dhcp4-server)
      if command -v systemctl >/dev/null 2>&1; then
        systemctl disable "$p.service" >/dev/null 2>&1 || true
      fi
      ;;
  esac
done
