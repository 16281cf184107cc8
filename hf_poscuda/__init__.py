"""hf-poscuda: make Hugging Face audio datasets unlearnable with PosCUDA (Gokul & Dubnov, arXiv 2401.02135)."""

from .config import PRESETS, PosCUDAConfig
from .hf import PosCUDA
from .key import KeyFileError, PosCUDAKey
from .transform import PosCUDATransform, apply_poscuda, apply_segments

__version__ = "0.2.0"

__all__ = [
    "PRESETS",
    "KeyFileError",
    "PosCUDA",
    "PosCUDAConfig",
    "PosCUDAKey",
    "PosCUDATransform",
    "apply_poscuda",
    "apply_segments",
    "__version__",
]
