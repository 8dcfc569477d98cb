"""Schemathesis hooks for the search endpoint (``SCHEMATHESIS_HOOKS=tests.schemathesis_hooks``).

The image route declares ``image/png``, ``image/jpeg`` and ``image/webp`` bodies. Schemathesis
fills a binary body with random bytes, which no server can accept as a picture; these strategies
make its *valid* examples real images (random size and pixels) so positive-data checks mean
something, while its negative mode still sends whatever it likes.
"""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st


def _image(fmt: str):
    @st.composite
    def draw(draw_):
        from PIL import Image

        w, h = draw_(st.integers(1, 48)), draw_(st.integers(1, 48))
        colour = tuple(draw_(st.integers(0, 255)) for _ in range(3))
        buf = io.BytesIO()
        Image.new("RGB", (w, h), colour).save(buf, format=fmt)
        return buf.getvalue()

    return draw()


schemathesis.openapi.media_type("image/png", _image("PNG"))
schemathesis.openapi.media_type("image/jpeg", _image("JPEG"))
schemathesis.openapi.media_type("image/webp", _image("WEBP"))
