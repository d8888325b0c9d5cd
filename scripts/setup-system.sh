#!/usr/bin/env bash
# Install the Debian packages herder's tests, demos and benchmarks use (root only).
# Without root it says what it skipped; the namespace tests then skip with a reason.
set -euo pipefail
PKGS=(
  nftables python3-nftables iproute2 iputils-ping arping tcpdump conntrack ethtool socat curl procps
  keepalived haproxy nginx-light wrk iperf3 dnsutils gdnsd dnsperf
  python3.11-venv
)
if [ "$(id -u)" != 0 ]; then
  echo "setup-system: not root; skipping apt-get install of: ${PKGS[*]}" >&2
  exit 0
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-system: all Debian packages present"
  exit 0
fi
echo "setup-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts some of these as services on install; herder's tests start their own.
for svc in nginx haproxy keepalived gdnsd; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
