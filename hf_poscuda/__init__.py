"""hf-poscuda: make Hugging Face audio datasets unlearnable with PosCUDA (Gokul & Dubnov, arXiv 2401.02135)."""

from .config import PRESETS, PosCUDAConfig
from .hf import PosCUDA
from .key import KeyFileError, PosCUDAKey
from .transform import PosCUDATransform, apply_poscuda

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "KeyFileError",
    "PosCUDA",
    "PosCUDAConfig",
    "PosCUDAKey",
    "PosCUDATransform",
    "apply_poscuda",
    "__version__",
]
