"""What every vision task does with image files: which suffixes are images, and checking that a
file opens as one (a corrupt file fails before training, naming it, not deep in a data loader)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapt import ConfigError, DataError, first_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def check_readable(image: str | Path, split: str, path: str, name: str | None = None) -> None:
    """Raise a DataError naming the data file and the image when ``image`` is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image) as handle:
            handle.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{split} data {path}: image {name or str(image)!r} is not a readable image "
                        f"({first_line(exc)})") from None


def refuse_attn_implementation(run: Any, family: str) -> None:
    """model.attn_implementation picks a transformers model's attention kernels; other models have none to pick."""
    chosen = run.config.model.attn_implementation
    if chosen:
        raise ConfigError(f"model.attn_implementation {chosen}: applies to transformers models only; "
                          f"{family} models choose their own attention: remove the setting")
