#!/usr/bin/env bash
# Install TensorFleet on Linux: the agent as a systemd service and/or the desktop app with its menu entry.
#
#   sudo packaging/linux/install.sh --agent-from dist/tensorfleet-agent      # packaged agent (PyInstaller build)
#   sudo packaging/linux/install.sh --agent-bin "$(command -v tensorfleet-agent)"   # agent installed with pip
#   sudo packaging/linux/install.sh --desktop-from dist/tensorfleet          # packaged desktop app
#   packaging/linux/install.sh --user-controller --tensorfleet-bin "$(command -v tensorfleet)"   # as yourself
#
# Options: --prefix DIR (default /opt), --no-start (install, do not enable/start the service).
# DESTDIR=/some/root stages everything below that folder instead (used by build-deb.sh); nothing is started then.
# Data lives in /var/lib/tensorfleet and settings in /etc/tensorfleet; uninstall.sh keeps both unless --purge.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DESTDIR="${DESTDIR:-}"
BINDIR="${BINDIR:-/usr/local/bin}"   # where the command links go (build-deb.sh: /usr/bin)
PREFIX=/opt
AGENT_FROM="" AGENT_BIN="" DESKTOP_FROM="" USER_CONTROLLER=0 TENSORFLEET_BIN="" START=1

die() { echo "install.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --agent-from) AGENT_FROM="$2"; shift 2 ;;
    --agent-bin) AGENT_BIN="$2"; shift 2 ;;
    --desktop-from) DESKTOP_FROM="$2"; shift 2 ;;
    --user-controller) USER_CONTROLLER=1; shift ;;
    --tensorfleet-bin) TENSORFLEET_BIN="$2"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --no-start) START=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -n "$AGENT_FROM$AGENT_BIN$DESKTOP_FROM" ] || [ "$USER_CONTROLLER" = 1 ] || die "nothing to install (see --help)"
[ -z "$DESTDIR" ] || START=0
systemd_running() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; }

if [ -n "$AGENT_FROM$AGENT_BIN" ]; then
  [ -n "$DESTDIR" ] || [ "$(id -u)" = 0 ] || die "installing the agent service needs root (sudo)"
  if [ -n "$AGENT_FROM" ]; then
    [ -x "$AGENT_FROM/tensorfleet-agent" ] || die "$AGENT_FROM/tensorfleet-agent is not a packaged agent"
    install -d "$DESTDIR$PREFIX"
    rm -rf "$DESTDIR$PREFIX/tensorfleet-agent"
    cp -a "$AGENT_FROM" "$DESTDIR$PREFIX/tensorfleet-agent"
    AGENT_BIN="$PREFIX/tensorfleet-agent/tensorfleet-agent"
    install -d "$DESTDIR$BINDIR"
    ln -sfn "$AGENT_BIN" "$DESTDIR$BINDIR/tensorfleet-agent"
  fi
  [ -n "$DESTDIR" ] || [ -x "$AGENT_BIN" ] || die "$AGENT_BIN is not executable"
  install -d "$DESTDIR/etc/systemd/system" "$DESTDIR/etc/tensorfleet" "$DESTDIR/usr/share/doc/tensorfleet"
  sed "s#@AGENT_BIN@#$AGENT_BIN#" "$HERE/tensorfleet-agent.service" > "$DESTDIR/etc/systemd/system/tensorfleet-agent.service"
  chmod 0644 "$DESTDIR/etc/systemd/system/tensorfleet-agent.service"
  [ -e "$DESTDIR/etc/tensorfleet/agent.env" ] || install -m 0640 "$HERE/agent.env" "$DESTDIR/etc/tensorfleet/agent.env"
  install -m 0644 "$ROOT/README.md" "$DESTDIR/usr/share/doc/tensorfleet/README.md"
  if [ -z "$DESTDIR" ]; then
    if ! id tensorfleet >/dev/null 2>&1; then
      useradd --system --home-dir /var/lib/tensorfleet --no-create-home --shell /usr/sbin/nologin tensorfleet
    fi
    chgrp tensorfleet /etc/tensorfleet/agent.env
    install -d -o tensorfleet -g tensorfleet -m 0750 /var/lib/tensorfleet
  fi
  if [ "$START" = 1 ] && systemd_running; then
    systemctl daemon-reload
    systemctl enable --now tensorfleet-agent.service
    echo "tensorfleet-agent is running: systemctl status tensorfleet-agent; journalctl -u tensorfleet-agent"
    echo "pair it: sudo -u tensorfleet $AGENT_BIN token --data-dir /var/lib/tensorfleet/agent"
  else
    echo "installed tensorfleet-agent.service (start it with: systemctl enable --now tensorfleet-agent)"
  fi
fi

if [ -n "$DESKTOP_FROM" ]; then
  [ -x "$DESKTOP_FROM/tensorfleet" ] || die "$DESKTOP_FROM/tensorfleet is not a packaged desktop app"
  install -d "$DESTDIR$PREFIX" "$DESTDIR$BINDIR" "$DESTDIR/usr/share/applications" \
    "$DESTDIR/usr/share/icons/hicolor/scalable/apps"
  rm -rf "$DESTDIR$PREFIX/tensorfleet"
  cp -a "$DESKTOP_FROM" "$DESTDIR$PREFIX/tensorfleet"
  ln -sfn "$PREFIX/tensorfleet/tensorfleet" "$DESTDIR$BINDIR/tensorfleet"
  sed "s#^Exec=.*#Exec=$PREFIX/tensorfleet/tensorfleet gui#" "$ROOT/resources/tensorfleet.desktop" \
    > "$DESTDIR/usr/share/applications/tensorfleet.desktop"
  install -m 0644 "$ROOT/resources/icons/tensorfleet.svg" "$DESTDIR/usr/share/icons/hicolor/scalable/apps/tensorfleet.svg"
  if [ -z "$DESTDIR" ] && command -v update-desktop-database >/dev/null; then
    update-desktop-database -q /usr/share/applications || true
  fi
  echo "installed the desktop app: TensorFleet in your applications menu, or run tensorfleet"
fi

if [ "$USER_CONTROLLER" = 1 ]; then
  TENSORFLEET_BIN="${TENSORFLEET_BIN:-$(command -v tensorfleet || true)}"
  [ -n "$TENSORFLEET_BIN" ] || die "tensorfleet not found: pass --tensorfleet-bin PATH"
  unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
  install -d "$unit_dir"
  sed "s#@TENSORFLEET_BIN@#$TENSORFLEET_BIN#" "$HERE/tensorfleet-serve.service" > "$unit_dir/tensorfleet-serve.service"
  if [ "$START" = 1 ] && command -v systemctl >/dev/null && systemctl --user show-environment >/dev/null 2>&1; then
    systemctl --user daemon-reload
    systemctl --user enable --now tensorfleet-serve.service
    echo "tensorfleet serve runs as your user service: systemctl --user status tensorfleet-serve"
  else
    echo "installed $unit_dir/tensorfleet-serve.service (systemctl --user enable --now tensorfleet-serve)"
  fi
fi
