"""The student as the index and the endpoint see it: dimension, checkpoint identity, two towers.

``load_encoder(checkpoint_uri)`` wraps a :class:`distill.student.Student` checkpoint in
:class:`StudentEncoder`, which satisfies ``serving.index.TextEncoder`` / ``ImageEncoder``.
The checkpoint hash is the student's own content id (sha256 over its weights), computed once
at load: the index manifest records it and the endpoint refuses an encoder that differs.
"""

from __future__ import annotations

import numpy as np


class StudentEncoder:
    """A loaded student checkpoint with the identity fields an index is checked against."""

    def __init__(self, student, checkpoint_uri: str | None = None):
        self.student = student
        self.checkpoint_hash: str = student.checkpoint_id
        self.checkpoint_id: str = checkpoint_uri or f"{student.arch_name}@{self.checkpoint_hash[:12]}"
        self.checkpoint_uri = checkpoint_uri
        self.dim: int = int(student.embed_dim)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return np.ascontiguousarray(self.student.encode_texts(list(texts)), dtype=np.float32)

    def encode_images(self, images: list[bytes]) -> np.ndarray:
        return np.ascontiguousarray(self.student.encode_images(list(images)), dtype=np.float32)


def load_encoder(checkpoint_uri: str, device: str = "cpu", torch_threads: int | None = None) -> StudentEncoder:
    """A student checkpoint directory (``Student.save``) as an encoder, in eval mode."""
    import torch

    from distill.student import Student

    if torch_threads:
        torch.set_num_threads(torch_threads)
    student = Student.load(checkpoint_uri, device=device)
    student.model.eval()
    return StudentEncoder(student, checkpoint_uri)
