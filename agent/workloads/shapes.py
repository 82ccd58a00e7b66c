"""A synthetic image-folder dataset: coloured shapes on noisy backgrounds, one folder per shape.

    python -m tensorfleet_agent.workloads.shapes DIR [--per-class 40] [--size 32] [--classes 3] [--seed 0]

Each class is a shape drawn in its own colour family (hue jittered) at a random place, size and rotation, so a
small CNN tells them apart in a few epochs on a CPU; --mixed-colours draws every shape in any colour (the shape
alone decides the class: harder). A fifth of the files are JPEG, the rest PNG, as a real folder mixes them. The
same arguments always write the same files (seeded). Used by the tests, the README's image example and the
benchmarks.
"""

from __future__ import annotations

import argparse
import colorsys
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
_HUES = (0.0, 0.33, 0.62, 0.12, 0.8, 0.5)  # each shape's colour family


def _polygon(cx: float, cy: float, radius: float, corners: int, turn: float) -> list[tuple[float, float]]:
    return [
        (
            cx + radius * math.cos(turn + 2 * math.pi * k / corners),
            cy + radius * math.sin(turn + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def draw(shape: str, size: int, gen: np.random.Generator, mixed_colours: bool = False) -> Image.Image:
    """One RGB image of `shape`."""
    import numpy as np
    from PIL import Image, ImageDraw

    noise = gen.integers(0, 60, size=(size, size, 3), dtype=np.uint8) + gen.integers(0, 120, dtype=np.uint8)
    image = Image.fromarray(noise.astype(np.uint8), "RGB")
    pen = ImageDraw.Draw(image)
    hue = float(gen.random()) if mixed_colours else (_HUES[SHAPES.index(shape)] + float(gen.uniform(-0.05, 0.05))) % 1
    r, g, b = colorsys.hsv_to_rgb(hue, float(gen.uniform(0.7, 1.0)), float(gen.uniform(0.8, 1.0)))
    colour = (int(r * 255), int(g * 255), int(b * 255))
    radius = size * float(gen.uniform(0.22, 0.38))
    cx, cy = (float(gen.uniform(radius, size - radius)) for _ in range(2))
    turn = float(gen.uniform(0, 2 * math.pi))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    width = max(2, round(radius / 3))
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "ring":
        pen.ellipse(box, outline=colour, width=width)
    elif shape == "square":
        pen.polygon(_polygon(cx, cy, radius, 4, turn), fill=colour)
    elif shape == "diamond":
        pen.polygon(_polygon(cx, cy, radius, 4, math.pi / 4), outline=colour, width=width)
    elif shape == "triangle":
        pen.polygon(_polygon(cx, cy, radius, 3, turn), fill=colour)
    else:  # cross
        for angle in (turn, turn + math.pi / 2):
            dx, dy = radius * math.cos(angle), radius * math.sin(angle)
            pen.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=colour, width=width)
    return image


def generate(
    root: Path, *, per_class: int = 40, size: int = 32, classes: int = 3, seed: int = 0, mixed_colours: bool = False
) -> dict[str, int]:
    """Write ROOT/<shape>/<n>.png|jpg; returns the number of images per class."""
    import numpy as np

    if not 2 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be between 2 and {len(SHAPES)}, got {classes}")
    if per_class < 1 or size < 8:
        raise ValueError("per_class must be >= 1 and size >= 8")
    rng = np.random.default_rng(seed)
    for shape in SHAPES[:classes]:
        folder = Path(root) / shape
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            image = draw(shape, size, rng, mixed_colours)
            if n % 5 == 4:
                image.save(folder / f"{n:04d}.jpg", quality=92)
            else:
                image.save(folder / f"{n:04d}.png")
    return {shape: per_class for shape in SHAPES[:classes]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tensorfleet_agent.workloads.shapes", description=__doc__)
    parser.add_argument("root", type=Path, help="folder to write (class folders are created under it)")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--classes", type=int, default=3, help=f"2..{len(SHAPES)}: {', '.join(SHAPES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed-colours", action="store_true", help="any colour for any shape (harder)")
    args = parser.parse_args(argv)
    counts = generate(
        args.root,
        per_class=args.per_class,
        size=args.size,
        classes=args.classes,
        seed=args.seed,
        mixed_colours=args.mixed_colours,
    )
    print(f"wrote {sum(counts.values())} images in {len(counts)} classes under {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
