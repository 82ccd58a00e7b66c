#!/usr/bin/env bash
# Remove what install.sh installed. Keeps the agent's data (/var/lib/tensorfleet) and settings (/etc/tensorfleet)
# unless --purge is given. Usage: sudo packaging/linux/uninstall.sh [--purge] [--prefix /opt]
set -euo pipefail
PREFIX=/opt PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) PURGE=1; shift ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    -h|--help) sed -n '2,3p' "$0"; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "uninstall.sh: needs root (sudo)" >&2; exit 2; }
if [ -d /run/systemd/system ] && systemctl list-unit-files tensorfleet-agent.service >/dev/null 2>&1; then
  systemctl disable --now tensorfleet-agent.service || true   # SIGTERM: running tasks drain first
fi
rm -f /etc/systemd/system/tensorfleet-agent.service
[ -d /run/systemd/system ] && systemctl daemon-reload || true
for link in /usr/local/bin/tensorfleet-agent /usr/local/bin/tensorfleet; do
  [ -L "$link" ] && case "$(readlink "$link")" in "$PREFIX"/tensorfleet*) rm -f "$link" ;; esac
done
rm -rf "$PREFIX/tensorfleet-agent" "$PREFIX/tensorfleet"
rm -f /usr/share/applications/tensorfleet.desktop /usr/share/icons/hicolor/scalable/apps/tensorfleet.svg
rm -rf /usr/share/doc/tensorfleet
if [ "$PURGE" = 1 ]; then
  rm -rf /var/lib/tensorfleet /etc/tensorfleet
  id tensorfleet >/dev/null 2>&1 && userdel tensorfleet || true
  echo "removed TensorFleet, its data and its settings"
else
  echo "removed TensorFleet; kept /var/lib/tensorfleet and /etc/tensorfleet (--purge removes them)"
fi
