"""hf-poscuda: make Hugging Face audio datasets unlearnable with PosCUDA (Gokul & Dubnov, arXiv 2401.02135)."""

from ._version import __version__
from .audit import AuditResult, audit_model
from .config import PRESETS, PosCUDAConfig
from .designed import DesignedSignature
from .errors import HubAuthError, HubPushError, KeyFileError, SecretLeakError
from .hub import CardInputs, push_protected, push_stream
from .key import PosCUDAKey
from .map_callable import PosCUDA
from .protect import ProtectionSummary, protect_dataset, protect_splits
from .report_schema import EvaluationReport
from .streaming import protected_stream
from .transform import PosCUDATransform, apply_poscuda, apply_segments

__all__ = [
    "PRESETS",
    "AuditResult",
    "CardInputs",
    "DesignedSignature",
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
    "audit_model",
    "protect_dataset",
    "protect_splits",
    "protected_stream",
    "push_protected",
    "push_stream",
    "__version__",
]
