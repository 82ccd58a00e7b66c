"""An ImageFolder-layout dataset: `ROOT/<class name>/**/*.png|*.jpg|*.jpeg`, one folder per class.

Scanning opens every image's header (cheap: Pillow reads only the first bytes), so an unreadable file is
refused by name before training starts instead of an hour into it. Pixels are decoded on first use, resized to
a square, and kept in memory when they fit (later epochs read the cache); every rank decodes only its shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTENSIONS = (".png", ".jpg", ".jpeg")
CACHE_BYTES = 1 << 30  # decoded pixels kept per rank; past this an image is decoded again each epoch


class ImageFolderError(ValueError):
    """The folder is not a usable image-classification dataset; the message says what and where."""


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]  # (file, class index), sorted by class then path

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for _path, label in self.samples:
            out[self.classes[label]] += 1
        return out


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def scan(root: Path, *, check: bool = True) -> ImageFolder:
    """The classes and images under `root`; ImageFolderError for an empty folder, a single class, a class folder
    without images, or (check) a file that is not a readable image."""
    root = Path(root)
    if not root.is_dir():
        raise ImageFolderError(f"{root}: not a folder (expected class_name/*.png|*.jpg|*.jpeg under it)")
    classes: list[str] = []
    samples: list[tuple[Path, int]] = []
    empty: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file() and not _hidden(p, root)
        )
        if not files:
            empty.append(folder.name)
            continue
        samples += [(p, len(classes)) for p in files]
        classes.append(folder.name)
    if not classes:
        what = f" (folders without images: {', '.join(empty[:5])})" if empty else ""
        raise ImageFolderError(f"{root}: no images; expected one folder per class holding .png/.jpg/.jpeg files{what}")
    if empty:
        raise ImageFolderError(f"{root}: class folder {empty[0]!r} has no .png/.jpg/.jpeg images")
    if len(classes) < 2:
        raise ImageFolderError(f"{root}: only one class ({classes[0]}); a classifier needs at least two")
    if check:
        for path, _label in samples:
            check_image(path)
    return ImageFolder(root, tuple(classes), tuple(samples))


def check_image(path: Path) -> None:
    """ImageFolderError naming `path` when Pillow cannot identify it as an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageFolderError(f"{path}: not a readable image ({exc})") from None
    if width < 1 or height < 1:
        raise ImageFolderError(f"{path}: has no pixels ({width}x{height})")


def decode(path: Path, size: int) -> Any:
    """RGB pixels resized to size x size, as a uint8 array (3, size, size)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when that is enough
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageFolderError(f"{path}: not a readable image ({exc})") from None
    return pixels.transpose(2, 0, 1).copy()


def split(folder: ImageFolder, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) sample indices: per class, a seeded shuffle puts round(val_fraction * n) aside (at least one
    when the fraction is > 0 and the class has two images), so every rank computes the same split."""
    import numpy as np

    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    by_class: dict[int, list[int]] = {}
    for index, (_path, label) in enumerate(folder.samples):
        by_class.setdefault(label, []).append(index)
    for label in sorted(by_class):
        indices = by_class[label]
        order = [indices[i] for i in rng.permutation(len(indices))]
        held = round(val_fraction * len(order))
        if val_fraction > 0 and len(order) >= 2:
            held = min(max(1, held), len(order) - 1)
        val += order[:held]
        train += order[held:]
    return sorted(train), sorted(val)


class Pixels:
    """Samples' pixels by index, decoded on first use and kept while the cache holds fewer than cache_bytes (each
    rank keeps the images of its own shard)."""

    def __init__(self, folder: ImageFolder, size: int, cache_bytes: int = CACHE_BYTES) -> None:
        self.folder, self.size = folder, size
        self.room = max(0, cache_bytes // (3 * size * size))  # images the cache may hold
        self.cache: dict[int, Any] = {}

    def __call__(self, index: int) -> Any:
        pixels = self.cache.get(index)
        if pixels is None:
            pixels = decode(self.folder.samples[index][0], self.size)
            if len(self.cache) < self.room:
                self.cache[index] = pixels
        return pixels


def channel_stats(pixels: Pixels, indices: list[int], seed: int, limit: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of pixels in 0..1 over a seeded sample of `indices` (the same on
    every rank)."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    chosen = indices if len(indices) <= limit else sorted(rng.choice(indices, size=limit, replace=False).tolist())
    stack = np.stack([pixels(i) for i in chosen]).astype(np.float64) / 255.0
    mean = stack.mean(axis=(0, 2, 3))
    std = np.maximum(stack.std(axis=(0, 2, 3)), 1e-3)
    return [float(v) for v in mean], [float(v) for v in std]
