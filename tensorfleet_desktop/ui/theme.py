"""Light and dark themes: the Fusion style with a full QPalette, pyqtgraph colours to match.

Asking Qt for a colour scheme (QStyleHints.setColorScheme) changes nothing on X11 and most Linux desktops, so the
app sets a real palette itself. "system" follows the OS where Qt knows its scheme (Windows, macOS, GNOME/KDE
portals) and re-applies when the OS switches; an unknown scheme reads as light.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory, QWidget

from tensorfleet_desktop.ui.formatting import STATE_COLORS
from tensorfleet_desktop.ui.plots import configure_pyqtgraph

THEMES = ("system", "light", "dark")

Role = QPalette.ColorRole
Group = QPalette.ColorGroup

# State colours for text on a dark background (GitHub's dark set); the light ones are formatting.STATE_COLORS' own.
_LIGHT_STATE_COLORS = dict(STATE_COLORS)
_DARK_SHADES = {
    "#2ea043": "#3fb950",
    "#1f6feb": "#58a6ff",
    "#8250df": "#a371f7",
    "#d1242f": "#f85149",
    "#bf8700": "#d29922",
    "#57606a": "#8b949e",
}

_state: dict[str, object] = {"theme": "system", "dark": False, "following": False, "asked": Qt.ColorScheme.Unknown}


def dark_palette() -> QPalette:
    """Every role in all three groups (a half-filled palette leaves light patches: tooltips, placeholders, links)."""
    p = QPalette()
    colors = {
        Role.Window: "#2d2d2d",
        Role.WindowText: "#e6e6e6",
        Role.Base: "#1e1e1e",
        Role.AlternateBase: "#262626",
        Role.ToolTipBase: "#3a3a3a",
        Role.ToolTipText: "#f0f0f0",
        Role.PlaceholderText: "#8c8c8c",
        Role.Text: "#e6e6e6",
        Role.Button: "#363636",
        Role.ButtonText: "#e6e6e6",
        Role.BrightText: "#ff7b72",
        Role.Light: "#4d4d4d",
        Role.Midlight: "#414141",
        Role.Mid: "#282828",
        Role.Dark: "#1b1b1b",
        Role.Shadow: "#0a0a0a",
        Role.Highlight: "#2f6fd1",
        Role.HighlightedText: "#ffffff",
        Role.Link: "#58a6ff",
        Role.LinkVisited: "#a371f7",
        Role.Accent: "#2f6fd1",
    }
    for role, color in colors.items():
        p.setColor(Group.All, role, QColor(color))
    disabled = {
        Role.WindowText: "#7a7a7a",
        Role.Text: "#7a7a7a",
        Role.ButtonText: "#7a7a7a",
        Role.PlaceholderText: "#5c5c5c",
        Role.Base: "#252525",
        Role.Button: "#2f2f2f",
        Role.Highlight: "#4a4a4a",
        Role.HighlightedText: "#a0a0a0",
        Role.Link: "#5a7aa0",
        Role.Accent: "#4a4a4a",
    }
    for role, color in disabled.items():
        p.setColor(Group.Disabled, role, QColor(color))
    p.setColor(Group.Inactive, Role.Highlight, QColor("#2a4f86"))
    return p


def light_palette() -> QPalette:
    """Fusion's own light palette (what the app looked like before themes)."""
    style = QStyleFactory.create("Fusion")
    return style.standardPalette()


def system_scheme() -> Qt.ColorScheme:
    """The OS colour scheme as Qt knows it (Unknown on plain X11)."""
    return QGuiApplication.styleHints().colorScheme()


def resolve(theme: str) -> bool:
    """Whether `theme` means dark; "system" asks the OS."""
    if theme in ("light", "dark"):
        return theme == "dark"
    return system_scheme() == Qt.ColorScheme.Dark


def is_dark() -> bool:
    return bool(_state["dark"])


def current() -> str:
    return str(_state["theme"])


def error_color() -> str:
    """Red text that reads on the current palette."""
    return "#f85149" if is_dark() else "#d1242f"


def apply(theme: str) -> bool:
    """Make `theme` ("system", "light", "dark") the app's look everywhere, plots included; returns whether it is
    dark. Safe to call again with the same theme."""
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        return False
    theme = theme if theme in THEMES else "system"
    _state["theme"] = theme
    _follow_system(app)
    hints = app.styleHints()
    asked = {"light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}.get(theme, Qt.ColorScheme.Unknown)
    if hasattr(hints, "setColorScheme") and asked != _state["asked"]:
        _state["asked"] = asked  # Qt >= 6.8: native dialogs and title bars follow where the platform can
        hints.setColorScheme(asked)  # Unknown: back to the OS's own
    dark = resolve(theme)
    _state["dark"] = dark
    if app.style().name().lower() != "fusion":
        app.setStyle("Fusion")  # before the palette: a style change resets it
    app.setPalette(dark_palette() if dark else light_palette())
    for state, light in _LIGHT_STATE_COLORS.items():  # table models read these at paint time
        STATE_COLORS[state] = _DARK_SHADES.get(light, light) if dark else light
    configure_pyqtgraph(dark)
    for widget in app.topLevelWidgets():
        restyle_plots(widget, dark)
    return dark


def restyle_plots(root: QWidget, dark: bool) -> None:
    """Recolour the plots that exist under `root` (new ones take pyqtgraph's config): background, axes, titles and
    legends."""
    configure_pyqtgraph(dark)
    background = pg.getConfigOption("background")
    foreground = pg.mkColor(pg.getConfigOption("foreground"))
    views = root.findChildren(pg.GraphicsView)
    if isinstance(root, pg.GraphicsView):
        views.append(root)
    for view in views:
        view.setBackground(background)
        scene = view.scene()
        if scene is None:
            continue
        for item in scene.items():
            if isinstance(item, pg.AxisItem):
                item.setPen(foreground)
                item.setTextPen(foreground)
            elif isinstance(item, pg.LegendItem):
                item.setLabelTextColor(foreground)
            elif isinstance(item, pg.LabelItem):
                item.setAttr("color", foreground)
                item.setText(item.text)


def _follow_system(app: QApplication) -> None:
    """Once per process: re-apply when the OS switches between light and dark while the theme is "system"."""
    if _state["following"]:
        return
    _state["following"] = True
    hints = app.styleHints()

    def changed(_scheme: Qt.ColorScheme) -> None:
        if _state["theme"] == "system":
            apply("system")

    hints.colorSchemeChanged.connect(changed, Qt.ConnectionType.QueuedConnection)
    _keep.append(hints)


_keep: list[QObject] = []  # keeps the style hints' Python wrapper (and so the connection) alive
