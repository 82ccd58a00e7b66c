"""An ImageFolder-layout dataset: `ROOT/<class name>/**/*.png|*.jpg|*.jpeg`, one folder per class.

Also read as users lay folders out: `ROOT/train/<class>/...` with `ROOT/val/<class>/...` (or valid/, validation/)
is a given split, and a folder that holds nothing but one folder (an uploaded parent of the class folders) is
looked into. Scanning opens every image's header (cheap: Pillow reads only the first bytes), so an unreadable
file is refused by name before training starts instead of an hour into it. Pixels are decoded on first use,
resized to a square, and kept in memory when they fit (later epochs read the cache); every rank decodes only
its shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTENSIONS = (".png", ".jpg", ".jpeg")
CACHE_BYTES = 1 << 30  # decoded pixels kept per rank; past this an image is decoded again each epoch
TRAIN, VAL = "train", ("val", "valid", "validation")


class ImageFolderError(ValueError):
    """The folder is not a usable image-classification dataset; the message says what and where."""


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]  # (file, class index), sorted by class then path (the given val last)
    given_val: int = -1  # >= 0: samples[given_val:] are the layout's own validation images (ROOT/val/...)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for _path, label in self.samples:
            out[self.classes[label]] += 1
        return out


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file() and _visible(p, folder)
    )


def _classes(root: Path) -> dict[str, list[Path]]:
    """class name -> its images; ImageFolderError for no images or a class folder without any."""
    found: dict[str, list[Path]] = {}
    empty: list[str] = []
    for folder in _dirs(root):
        files = _images(folder)
        if files:
            found[folder.name] = files
        else:
            empty.append(folder.name)
    if not found:
        what = f" (folders without images: {', '.join(empty[:5])})" if empty else ""
        raise ImageFolderError(f"{root}: no images; expected one folder per class holding .png/.jpg/.jpeg files{what}")
    if empty:
        raise ImageFolderError(f"{root}: class folder {empty[0]!r} has no .png/.jpg/.jpeg images")
    return found


def _unwrap(root: Path) -> Path:
    """Into a lone folder while the folder holds nothing else and the lone one holds folders, not images (an upload
    of the parent of the class folders); a lone class folder of images stays one class."""
    for _ in range(4):
        dirs = _dirs(root)
        direct = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS]
        if len(dirs) != 1 or direct or dirs[0].name in (TRAIN, *VAL):
            break
        inner = dirs[0]
        if not _dirs(inner) or any(p.is_file() and p.suffix.lower() in EXTENSIONS for p in inner.iterdir()):
            break
        root = inner
    return root


def scan(root: Path, *, check: bool = True) -> ImageFolder:
    """The classes and images under `root`; ImageFolderError for an empty folder, a single class, a class folder
    without images, a validation class the training set lacks, or (check) a file that is not a readable image."""
    root = Path(root)
    if not root.is_dir():
        raise ImageFolderError(f"{root}: not a folder (expected class_name/*.png|*.jpg|*.jpeg under it)")
    root = _unwrap(root)
    train_dir = root / TRAIN
    val_dir = next((root / name for name in VAL if (root / name).is_dir()), None)
    if not train_dir.is_dir():
        train_dir, val_dir = root, None
    train = _classes(train_dir)
    if len(train) < 2:
        raise ImageFolderError(f"{train_dir}: only one class ({next(iter(train))}); a classifier needs at least two")
    classes = tuple(train)
    samples = [(p, k) for k, name in enumerate(classes) for p in train[name]]
    given_val = -1
    if val_dir is not None:
        val = _classes(val_dir)
        unknown = sorted(set(val) - set(classes))
        if unknown:
            raise ImageFolderError(f"{val_dir}: class {unknown[0]!r} is not among the training classes ({train_dir})")
        given_val = len(samples)
        samples += [(p, k) for k, name in enumerate(classes) for p in val.get(name, [])]
    if check:
        for path, _label in samples:
            check_image(path)
    return ImageFolder(root, classes, tuple(samples), given_val)


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
            rgb = _eight_bit(image).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageFolderError(f"{path}: not a readable image ({exc})") from None
    return pixels.transpose(2, 0, 1).copy()


def _eight_bit(image: Any) -> Any:
    """A 16-bit, 32-bit or float greyscale image scaled into 0..255 (Pillow's convert would clip it at 255)."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    import numpy as np
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    top = float(values.max()) if values.size else 1.0
    full = 65535.0 if image.mode != "F" and top <= 65535 else max(top, 1.0)
    return Image.fromarray(np.clip(values / full * 255.0, 0, 255).astype(np.uint8), "L")


def split(folder: ImageFolder, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) sample indices: the layout's val/ folder when it has one, else per class a seeded shuffle puts
    round(val_fraction * n) aside (at least one when the fraction is > 0 and the class has two images), so every
    rank computes the same split."""
    import numpy as np

    if folder.given_val >= 0:  # the layout's own val/ folder
        return list(range(folder.given_val)), list(range(folder.given_val, len(folder.samples)))
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
