"""Image and file IO: the only module that touches PIL. Reads are strict, writes are atomic (through
:mod:`methods.utils`'s one atomic writer, whose ``atomic_path``, ``atomic_dir`` and ``write_*_atomic`` it re-exports).

``read_image`` returns a float32 RGB tensor (1, 3, H, W) in [0, 1]. Documented handling of image kinds:

============================  =============================================================================
EXIF orientation              applied (``ImageOps.exif_transpose``), so pixels are upright
grayscale (L, 1)              replicated to three channels
palette (P)                   expanded through the palette (to RGBA first when it has transparency)
alpha (RGBA, LA, PA)          composited over white (paintings and photos have no meaningful alpha)
CMYK                          converted with Pillow's colour conversion (no ICC colour management)
16-bit (I;16*, I)             scaled from 0..65535 to [0, 1] without truncating to 8 bits
YCbCr, LAB, HSV               converted to RGB
float (F)                     rejected: no defined value range
============================  =============================================================================

Rejected with an :class:`ImageError` naming the file: missing, zero-byte, not an image, truncated or corrupt,
more than ``max_pixels`` pixels (checked from the header before any decoding: decompression bombs; Pillow's own
hard limit, twice ``PIL.Image.MAX_IMAGE_PIXELS`` = about 179 MP, applies on top of a higher ``max_pixels``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from methods.errors import NstError
from methods.utils import atomic_dir as atomic_dir  # the project's one atomic writer, re-exported for the pipeline
from methods.utils import atomic_path as atomic_path
from methods.utils import write_bytes_atomic as write_bytes_atomic
from methods.utils import write_text_atomic as write_text_atomic

if TYPE_CHECKING:  # torch is imported where a tensor is made: fetch and prepare's file handling runs without it
    from torch import Tensor


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
# Default decompression-bomb bound (prepare.max_pixels overrides): 40 MP is ~ a 7700 x 5200 photo.
DEFAULT_MAX_PIXELS = 40_000_000
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class ImageError(NstError):
    """An image file cannot be used; the message names the file and the reason."""


# ----------------------------------------------------------------------------------------- reading


def list_images(folder: str | Path) -> list[Path]:
    """Image files (by suffix, case-insensitive) directly in ``folder``, sorted by name; hidden files skipped.

    Raises:
        ImageError: ``folder`` is missing or not a directory.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ImageError(f"{folder}: folder does not exist")
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a folder")
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _open(path: Path, max_pixels: int) -> Image.Image:
    if not path.exists():
        raise ImageError(f"{path}: file does not exist")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # We enforce our own, configurable bound below; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{path}: not an image file (Pillow cannot identify it)") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from exc
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise ImageError(
            f"{path}: {width}x{height} = {width * height} pixels exceeds max_pixels = {max_pixels} "
            "(decompression-bomb guard; raise prepare.max_pixels to allow it)"
        )
    if width < 1 or height < 1:
        img.close()
        raise ImageError(f"{path}: image has no pixels ({width}x{height})")
    return img


def image_size(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header (no pixel decoding, except that Pillow
    decodes a PNG without an eXIf chunk before its pixel data, to look for one after it).

    Raises:
        ImageError: as :func:`read_image` for a file that cannot be opened (or, for PNG, decoded).
    """
    path = Path(path)
    with _open(path, max_pixels) as img:
        width, height = img.size
        try:
            orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation tag
        except (OSError, SyntaxError, ValueError) as exc:  # PngImageFile.getexif() loads (decodes) the image
            raise ImageError(f"{path}: corrupt or truncated image ({exc})") from exc
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _to_array(img: Image.Image, path: Path) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from any supported mode (see the module docstring)."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageError(f"{path}: {mode} image has values outside 0..65535")
        arr = (arr / 65535.0).astype(np.float32)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "F":
        raise ImageError(f"{path}: floating-point images (mode F) are not supported (no defined value range)")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """Load an image as a float32 RGB tensor of shape (1, 3, H, W) in [0, 1].

    Raises:
        ImageError: the file is missing, empty, not an image, truncated/corrupt, over ``max_pixels``,
            or in an unsupported mode. The message names the file.
    """
    path = Path(path)
    img = _open(path, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img)
        arr = _to_array(img, path)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # Pillow signals truncated / corrupt data with OSError ("image file is truncated", "broken data
        # stream"), sometimes SyntaxError or ValueError for malformed headers.
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from exc
    finally:
        img.close()
    import torch

    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0).contiguous()


# ----------------------------------------------------------------------------------------- writing


def to_pil(image: Tensor) -> Image.Image:
    """A (1, 3, H, W) or (3, H, W) tensor in [0, 1] as an 8-bit RGB PIL image (values clamped, rounded)."""
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise NstError(f"to_pil takes one image, got a batch of {image.shape[0]}")
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3:
        raise NstError(f"expected an RGB image tensor (3, H, W), got shape {tuple(image.shape)}")
    import torch

    arr = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


def write_image(image: Tensor, path: str | Path) -> None:
    """Save a (1, 3, H, W) tensor in [0, 1] as PNG (8-bit RGB), atomically (temp file + rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        to_pil(image).save(tmp, format="PNG")


def sniff_image_suffix(data: bytes) -> str | None:
    """File suffix (".jpg", ".png", ...) for encoded image bytes, or None when Pillow cannot identify them."""
    import io as _io

    try:
        with Image.open(_io.BytesIO(data)) as img:
            fmt = (img.format or "").upper()
    except (UnidentifiedImageError, OSError):
        return None
    return {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}.get(fmt)


def write_csv(rows: list[dict[str, object]], fields: tuple[str, ...], path: str | Path) -> None:
    """Write ``rows`` as CSV with a header of ``fields`` (None -> empty cell), atomically."""
    import csv
    import io as _io

    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})
    write_text_atomic(path, buf.getvalue())


def side_by_side(images: list[Tensor], height: int = 256, gap: int = 4) -> Image.Image:
    """Images (each (1, 3, H, W) in [0, 1]) scaled to a common ``height`` and joined left to right on white."""
    pils = []
    for image in images:
        pil = to_pil(image)
        width = max(1, round(pil.width * height / pil.height))
        pils.append(pil.resize((width, height), Image.Resampling.LANCZOS))
    canvas = Image.new("RGB", (sum(p.width for p in pils) + gap * (len(pils) - 1), height), "white")
    x = 0
    for pil in pils:
        canvas.paste(pil, (x, 0))
        x += pil.width + gap
    return canvas


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV written by :func:`write_csv` as dicts of strings; a missing file reads as no rows."""
    import csv

    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
