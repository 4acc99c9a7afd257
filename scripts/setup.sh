#!/usr/bin/env bash
# Installs what knockgate needs on a Debian/Ubuntu machine (as root), then the npm packages,
# then builds. Idempotent: only missing packages are installed.
#   scripts/setup.sh            apt packages + npm ci + build
#   SKIP_BUILD=1 scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (sudo $0): installing packages and loading XDP programs need it" >&2
    exit 1
  fi
}

# build and run: clang llvm libbpf-dev libbpf1 bpftool libelf-dev make gcc iproute2 util-linux;
# sharing interfaces with other XDP programs: libxdp1 (the dispatcher), libxdp-dev, xdp-tools
# (xdp-loader status; the tests run xdp-filter beside the gate);
# benchmarks (baselines measured in the same run): nftables knockd ethtool;
# tests: systemd (systemd-analyze verify of the unit), vagrant (vagrant validate), zsh (completion),
#   fwknop-client (the real fwknop client, and its libfko3 as the parser oracle, for fwknop doors);
# fleet mode (tests start their own members, with certificates made by openssl): etcd-server etcd-client openssl;
# the Debian package (npm run package, test/ops/package.test.ts): dpkg-dev (dpkg-shlibdeps), lintian,
# libxdp1 (a Depends of the package), man-db (its man pages rendered); dashboards and alerts
# (test/ops/prometheus.test.ts): prometheus (the server and promtool)
APT_PACKAGES=(clang llvm libbpf-dev libbpf1 bpftool libelf-dev make gcc iproute2 util-linux libxdp1 libxdp-dev xdp-tools nftables knockd ethtool systemd vagrant zsh fwknop-client etcd-server etcd-client openssl nodejs npm
  dpkg-dev lintian man-db prometheus)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere (nodesource, nvm): only require them when node is absent.
if command -v node >/dev/null 2>&1; then
  filtered=()
  for p in "${missing[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || filtered+=("$p"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  need_root
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's prometheus package enables and starts a server on :9090 where systemd runs. The
  # tests start their own (their own port and data dir): keep the packaged one off.
  if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    if [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/prometheus ]; then
      invoke-rc.d prometheus stop >/dev/null 2>&1 || true
      update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
  fi
fi

# etcd-server enables and starts a packaged member on :2379 with /var/lib/etcd. The tests and the
# demo start their own members on free ports; a fleet's real cluster is configured by its operator
# (README, "Fleet mode"). So: stop and disable the packaged one, once, right after installing it.
if printf '%s\n' "${missing[@]+"${missing[@]}"}" | grep -qx etcd-server; then
  if [ -d /run/systemd/system ]; then
    # systemd is PID 1
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/etcd ]; then
    # no systemd (a container, sysvinit): the package's init script, if anything started it
    /etc/init.d/etcd stop >/dev/null 2>&1 || true
    command -v update-rc.d >/dev/null 2>&1 && update-rc.d etcd disable >/dev/null 2>&1 || true
  fi
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node $(node --version) is too old: knockgate needs Node 20 or newer" >&2
  echo "setup: on Debian 12, install Node 20 from NodeSource (https://github.com/nodesource/distributions) and run this again" >&2
  exit 1
fi

# bpffs: pins live there. `ip netns exec` hides it, and some minimal systems do not mount it.
if [ "$(id -u)" -eq 0 ] && ! mount -t bpf | grep -q ' /sys/fs/bpf '; then
  mount -t bpf bpf /sys/fs/bpf
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
if [ -z "${SKIP_BUILD:-}" ]; then
  npm run build
fi
