"""persona-distill: distil a vision-language teacher's persona preferences into a CLIP student."""

__version__ = "0.1.0"
