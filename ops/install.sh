#!/usr/bin/env bash
# Installs smart-cctv as a systemd service. Safe to run again: it never
# overwrites an existing config, only brings modes and the unit up to date.
#
#   sudo ops/install.sh [--binary PATH] [--no-start] [--root DIR]
#
# --binary   the smart-cctv binary [default: target/release/smart-cctv]
# --no-start install and enable, but do not start now
# --root     install under DIR instead of / (for packaging and tests: no
#            user is created and systemctl is not called)
set -euo pipefail
cd "$(dirname "$0")/.."

binary=target/release/smart-cctv
root=/
start=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --root) root="$2"; shift 2 ;;
    --no-start) start=no; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "install.sh: $binary not found; run 'cargo build --release' first or pass --binary" >&2; exit 1; }

user=smart-cctv
etc="$root/etc/smart-cctv"
data="$root/var/lib/smart-cctv"
bin="$root/usr/local/bin"
units="$root/etc/systemd/system"
real_root=no
[ "$(cd "$root" && pwd)" = / ] && real_root=yes

if [ "$real_root" = yes ]; then
  [ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo)" >&2; exit 1; }
  if ! id "$user" >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/smart-cctv --shell /usr/sbin/nologin --groups audio,video "$user"
    echo "created user $user"
  fi
fi

install -d -m 0755 "$bin" "$units"
install -d -m 0750 "$etc" "$etc/calibration"
install -d -m 0750 "$data"
install -m 0755 "$binary" "$bin/smart-cctv"
install -m 0644 ops/smart-cctv.service "$units/smart-cctv.service"
# The policy ships with the program; the config is the user's and is kept.
install -m 0644 supervision.toml "$etc/supervision.toml"
if [ ! -e "$etc/config.yaml" ]; then
  install -m 0640 config/config.yaml "$etc/config.yaml"
  echo "installed $etc/config.yaml: add your cameras, then 'smart-cctv --config $etc/config.yaml config validate'"
fi
# It holds camera and SMTP passwords: root writes it, the service only reads it.
chmod 0640 "$etc/config.yaml"

if [ "$real_root" = yes ]; then
  chown -R "$user:$user" "$data"
  chown "root:$user" "$etc" "$etc/calibration"
  chown "root:$user" "$etc/config.yaml"
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable smart-cctv.service
    if [ "$start" = yes ]; then
      systemctl restart smart-cctv.service
      echo "started: systemctl status smart-cctv; smart-cctv --config $etc/config.yaml status"
    fi
  else
    echo "systemd is not running here: start it with '$bin/smart-cctv --config $etc/config.yaml run'"
  fi
fi
echo "installed smart-cctv under $root"
