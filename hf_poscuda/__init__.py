"""hf-poscuda: make Hugging Face audio datasets unlearnable with PosCUDA (Gokul & Dubnov, arXiv 2401.02135)."""

__version__ = "0.2.0"  # first: card and hub read it while this package is still importing

from .config import PRESETS, PosCUDAConfig  # noqa: E402
from .errors import HubAuthError, HubPushError, KeyFileError, SecretLeakError  # noqa: E402
from .hub import CardInputs, push_protected, push_stream  # noqa: E402
from .key import PosCUDAKey  # noqa: E402
from .map_callable import PosCUDA  # noqa: E402
from .protect import ProtectionSummary, protect_dataset, protect_splits  # noqa: E402
from .report_schema import EvaluationReport  # noqa: E402
from .streaming import protected_stream  # noqa: E402
from .transform import PosCUDATransform, apply_poscuda, apply_segments  # noqa: E402

__all__ = [
    "PRESETS",
    "CardInputs",
    "EvaluationReport",
    "HubAuthError",
    "HubPushError",
    "KeyFileError",
    "PosCUDA",
    "PosCUDAConfig",
    "PosCUDAKey",
    "PosCUDATransform",
    "ProtectionSummary",
    "SecretLeakError",
    "apply_poscuda",
    "apply_segments",
    "protect_dataset",
    "protect_splits",
    "protected_stream",
    "push_protected",
    "push_stream",
    "__version__",
]
