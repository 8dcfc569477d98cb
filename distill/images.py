"""The pixels every model sees: one decode path for ingest, the student, the VLM judge and serving.

Why one module: a 16-bit greyscale PNG run through PIL's ``convert("RGB")`` clips 99.6 % of a
0-65535 gradient to white, and dropping alpha shows a transparent logo on black to the student
while the VLM judge, compositing onto white, saw it on white. Teacher and student must judge the
same picture, so every mode becomes 8-bit RGB here, once:

* 16-bit and 32-bit integer greyscale (``I;16*``, ``I``) is *scaled* to 8 bits (x 255 / 65535),
  not clipped; float greyscale (``F``) in [0, 1] is scaled, otherwise clipped to [0, 255];
* anything with transparency (``RGBA``, ``LA``, ``PA``, palette or RGB with a transparent
  colour) is composited onto ``BACKGROUND`` (white, as product photos are shot);
* every other mode (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ...) goes through PIL's conversion;
* an EXIF orientation tag is applied.

Ingest stores the result (``normalise_for_catalog``), so models normally read plain RGB; the
student and the judges still decode through ``prepare_image`` so a Parquet catalog written
outside ingest is seen the same way by all of them.

Import discipline: PIL and numpy only (no torch), so the judge actor in the vLLM venv uses it.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

BACKGROUND: tuple[int, int, int] = (255, 255, 255)
# Formats a catalog may carry as-is (CATALOG_SCHEMA's ``image`` holds PNG/JPEG/WebP bytes).
KEEP_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
_ADDRESS = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


class ImageError(ValueError):
    """Bytes that cannot become an image; the message says why in words a user can act on."""


def describe_error(err: BaseException) -> str:
    """A reason for a failed decode with no memory addresses, and an over-size image called so.

    PIL's messages embed the stream's repr (``<_io.BytesIO object at 0x...>``), which changes on
    every run and tells a user nothing; its decompression-bomb guard is a size limit, not damage.
    """
    if isinstance(err, Image.DecompressionBombError):
        return f"over-size image: {_ADDRESS.sub('', str(err))} (Pillow's decompression-bomb limit; downscale it)"
    if isinstance(err, UnidentifiedImageError):
        return "corrupt or unsupported image: not a format Pillow can identify"
    text = _ADDRESS.sub("", str(err)).strip()
    return f"corrupt image: {type(err).__name__}" + (f": {text}" if text else "")


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def to_rgb8(img: Image.Image) -> tuple[Image.Image, str | None]:
    """(8-bit RGB image, what was converted or None when it already was plain RGB)."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img, None
    if mode.startswith("I") or mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if mode == "F":
            a = a * 255.0 if a.size and 0.0 <= a.min() and a.max() <= 1.0 else a
            what = "float greyscale scaled to 8-bit RGB"
        else:  # I;16, I;16B, I;16L, I;16N and I (PIL's 32-bit ints, what 16-bit PNGs may decode to)
            a = a * (255.0 / 65535.0)
            what = "16-bit greyscale scaled to 8-bit RGB"
        grey = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB"), what
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, BACKGROUND)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out, f"{mode} with transparency composited onto white"
    return img.convert("RGB"), f"{mode} converted to RGB"


def open_image(data: bytes) -> Image.Image:
    """Decode fully (a truncated file fails here, not later), or raise ``ImageError``."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # structural damage, cheaply
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except Exception as err:  # noqa: BLE001 - PIL raises many types for damaged files
        raise ImageError(describe_error(err)) from None


def prepare_image(data: bytes | None, what: str = "image", max_side: int | None = None,
                  max_pixels: int | None = None) -> Image.Image:
    """Encoded bytes -> the 8-bit RGB picture every model sees, within an optional pixel budget.

    ``max_side`` / ``max_pixels`` downscale (never upscale) for judges that pay per pixel; the
    student leaves them unset and resizes with its own preprocess. Errors name ``what``.
    """
    if not data:
        raise ImageError(f"{what}: no image")
    try:
        img = open_image(data)
    except ImageError as err:
        raise ImageError(f"{what}: unreadable image ({err})") from None
    rgb, _ = to_rgb8(ImageOps.exif_transpose(img))
    w, h = rgb.size
    if w < 1 or h < 1:
        raise ImageError(f"{what}: empty image")
    scale = 1.0
    if max_side:
        scale = min(scale, max_side / max(w, h))
    if max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (w * h)))
    if scale < 1.0:
        rgb = rgb.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.LANCZOS)
    return rgb


def normalise_for_catalog(data: bytes, max_side: int) -> tuple[bytes, list[str]]:
    """(bytes to store, what was changed): ingest's one pass over an image; raises ``ImageError``.

    A PNG, JPEG or WebP that is already 8-bit RGB, no larger than ``max_side`` on its longer side
    and not rotated by EXIF keeps its original bytes (no generation loss, no bloat). Anything else
    is decoded, rotated, made 8-bit RGB (``to_rgb8``), downscaled to fit and re-encoded: as JPEG
    (quality 95) when the source was a JPEG, since a photo saved as PNG grows several-fold, and as
    PNG otherwise (lossless).
    """
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        img = Image.open(io.BytesIO(data))
        fmt = img.format or ""
        rotated = img.getexif().get(0x0112, 1) not in (1, None)  # EXIF Orientation
        too_big = max(img.size) > max_side
        if too_big and fmt == "JPEG":
            img.draft("RGB", (max_side, max_side))  # decode at a reduced scale: much faster
        img.load()
    except Exception as err:  # noqa: BLE001 - PIL raises many types for damaged files
        raise ImageError(describe_error(err)) from None
    changes: list[str] = []
    if fmt in KEEP_FORMATS and not too_big and not rotated and img.mode == "RGB" and "transparency" not in img.info:
        return data, changes
    if rotated:
        img = ImageOps.exif_transpose(img)
        changes.append("EXIF-rotated")
    img, what = to_rgb8(img)
    if what:
        changes.append(what)
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        changes.append("downscaled")
    if fmt not in KEEP_FORMATS:
        changes.append(f"{fmt or 'unknown format'} re-encoded as PNG")
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=95)
    else:
        img.save(buf, "PNG")
    return buf.getvalue(), changes
