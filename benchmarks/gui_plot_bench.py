#!/usr/bin/env python3
"""The job-detail live plot under load, beside a plain pyqtgraph curve, as JSON (offscreen, no display needed).

A 100,000-point curve receives points one by one (a metric stream); the app buffers them and redraws at most
REDRAW_HZ (5) times a second with downsampling and clip-to-view. The peer is the naive way: setData on every point
with neither. Reported: ms per redraw (setData + render of the widget) once the curve holds 100k points (also
with the toolbar's EMA smoothing on, which draws the raw curve faint behind the smoothed one), the EMA alone over
100k points, and the wall time to ingest 20,000 more points.

Usage: python benchmarks/gui_plot_bench.py
"""

from __future__ import annotations

import json
import os
import statistics
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QApplication

from tensorfleet_desktop.ui.plots import MetricPlot, ema

POINTS, MORE, FRAMES = 100_000, 20_000, 30


def render(widget: pg.PlotWidget) -> None:
    image = QImage(widget.size(), QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    widget.render(painter)
    painter.end()


def frame_ms(widget: pg.PlotWidget, update: object) -> float:
    samples = []
    for _ in range(FRAMES):
        t0 = time.perf_counter()
        update()  # type: ignore[operator]
        render(widget)
        samples.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(samples), 2)


def main() -> int:
    app = QApplication.instance() or QApplication([])
    x = np.arange(POINTS, dtype=float)
    y = np.cumsum(np.random.default_rng(0).normal(size=POINTS))

    ours = MetricPlot()
    ours.resize(900, 400)
    ours.show()
    ours.set_series("loss", x, y)
    ours.flush()
    ours.plotItem.setXRange(POINTS - 5000, POINTS)  # the user zoomed in on the latest steps

    plain = pg.PlotWidget()
    plain.resize(900, 400)
    plain.show()
    curve = plain.plotItem.plot(x, y)
    plain.plotItem.setXRange(POINTS - 5000, POINTS)
    app.processEvents()

    def ours_update() -> None:
        ours.add_points("loss", [float(ours.series["loss"].n)], [float(y[-1])])
        ours.flush()

    xs, ys = list(x), list(y)

    def plain_update() -> None:
        xs.append(float(len(xs)))
        ys.append(float(ys[-1]))
        curve.setData(xs, ys)

    ours_frame, plain_frame = frame_ms(ours, ours_update), frame_ms(plain, plain_update)
    ours.set_smoothing(0.9)  # the toolbar's EMA: recomputed over the whole series on each redraw
    smoothed_frame = frame_ms(ours, ours_update)
    t0 = time.perf_counter()
    for _ in range(FRAMES):
        ema(y, 0.9)
    ema_ms = (time.perf_counter() - t0) * 1000 / FRAMES
    ours.set_smoothing(0.0)

    t0 = time.perf_counter()
    for i in range(MORE):  # a burst of points: buffered, drawn by the periodic redraw
        ours.add_points("loss", [float(POINTS + FRAMES + i)], [float(i)])
        if i % 2000 == 0:
            app.processEvents()
    ours.flush()
    render(ours)
    ours_ingest = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, MORE, 100):  # the naive way redraws per point; timed on 1 in 100 and scaled up
        xs.append(float(len(xs)))
        ys.append(float(i))
        curve.setData(xs, ys)
        render(plain)
    plain_ingest = (time.perf_counter() - t0) * 100

    print(
        json.dumps(
            {
                "curve_points": POINTS,
                "redraw_ms": {"tensorfleet": ours_frame, "plain_pyqtgraph": plain_frame},
                "redraw_smoothed_ms": smoothed_frame,
                "ema_100k_points_ms": round(ema_ms, 2),
                "ingest_20k_points_s": {
                    "tensorfleet": round(ours_ingest, 2),
                    "plain_pyqtgraph": round(plain_ingest, 1),
                },
                "note": "tensorfleet = downsampling + clip-to-view + 5 Hz batched redraws; plain = setData per point",
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
