#!/usr/bin/env bash
# Build tensorfleet_VERSION_ARCH.deb from the PyInstaller builds: the agent as a systemd service (user
# `tensorfleet`, data in /var/lib/tensorfleet) and the desktop app with its menu entry.
#   packaging/linux/build-deb.sh [DIST_DIR (default dist)] [OUT_DIR (default dist)]
# Install: sudo apt install ./dist/tensorfleet_*.deb    Remove: sudo apt remove tensorfleet (keeps data)
# Purge:   sudo apt purge tensorfleet (removes /var/lib/tensorfleet and /etc/tensorfleet too)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DIST="$(realpath "${1:-dist}")"
OUT="$(realpath -m "${2:-dist}")"
[ -x "$DIST/tensorfleet-agent/tensorfleet-agent" ] || { echo "no packaged agent in $DIST (packaging/build.py agent)" >&2; exit 2; }
[ -x "$DIST/tensorfleet/tensorfleet" ] || { echo "no packaged desktop app in $DIST (packaging/build.py desktop)" >&2; exit 2; }
VERSION="$("$DIST/tensorfleet-agent/tensorfleet-agent" --version | awk '{print $2}')"
ARCH="$(dpkg --print-architecture)"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
DESTDIR="$STAGE" BINDIR=/usr/bin "$HERE/install.sh" --agent-from "$DIST/tensorfleet-agent" --desktop-from "$DIST/tensorfleet" --no-start >/dev/null
install -d "$STAGE/DEBIAN"
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: tensorfleet
Version: $VERSION
Architecture: $ARCH
Maintainer: TensorFleet <tensorfleet@localhost>
Section: science
Priority: optional
Depends: libc6, libgl1, libegl1, libxkbcommon0, libfontconfig1, libdbus-1-3
Recommends: python3 (>= 3.9)
Description: Train ML models on the machines you already have
 A LAN training cluster: tensorfleet-agent runs training tasks on each box (installed as a systemd
 service), and the TensorFleet desktop app schedules jobs on them, plots live metrics and keeps a
 model registry.
CONTROL
echo "/etc/tensorfleet/agent.env" > "$STAGE/DEBIAN/conffiles"
cat > "$STAGE/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  id tensorfleet >/dev/null 2>&1 || useradd --system --home-dir /var/lib/tensorfleet --no-create-home \
    --shell /usr/sbin/nologin tensorfleet
  install -d -o tensorfleet -g tensorfleet -m 0750 /var/lib/tensorfleet
  chgrp tensorfleet /etc/tensorfleet/agent.env && chmod 0640 /etc/tensorfleet/agent.env
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now tensorfleet-agent.service || true
  fi
  command -v update-desktop-database >/dev/null && update-desktop-database -q /usr/share/applications || true
fi
exit 0
POSTINST
cat > "$STAGE/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl disable --now tensorfleet-agent.service || true
fi
exit 0
PRERM
cat > "$STAGE/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
  rm -rf /var/lib/tensorfleet /etc/tensorfleet
  id tensorfleet >/dev/null 2>&1 && userdel tensorfleet || true
fi
[ -d /run/systemd/system ] && systemctl daemon-reload || true
exit 0
POSTRM
chmod 0755 "$STAGE/DEBIAN/postinst" "$STAGE/DEBIAN/prerm" "$STAGE/DEBIAN/postrm"
mkdir -p "$OUT"
DEB="$OUT/tensorfleet_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$STAGE" "$DEB" >/dev/null
echo "$DEB ($(du -m "$DEB" | cut -f1) MiB)"
