"""Push protected datasets to the Hugging Face Hub with their card; the key never leaves the machine.

- :mod:`~hf_poscuda.hub.plan`: what a push will do, with no network (checks, record, card, files).
- :mod:`~hf_poscuda.hub.record`: ``poscuda.json``, the public record of a repo's protection.
- :mod:`~hf_poscuda.hub.push`: splits in memory, through ``Dataset.push_to_hub``.
- :mod:`~hf_poscuda.hub.shards`: splits as streams of shards, uploaded as they are made and resumable.
- :mod:`~hf_poscuda.hub.retry`: retries where ``huggingface_hub`` does not retry.
"""

from ..errors import HubAuthError, HubPushError
from ..leaks import check_key_outside, scan_dataset_for_secret
from .plan import CardInputs, PlannedFile, PushPlan, PushResult
from .push import push_protected
from .record import PROTECTION_FILE, ProtectionRecord, ShardUpload, UploadProgress
from .retry import RetryPolicy, call_with_retries, is_transient
from .shards import push_stream, push_streams

__all__ = [
    "PROTECTION_FILE",
    "CardInputs",
    "HubAuthError",
    "HubPushError",
    "PlannedFile",
    "ProtectionRecord",
    "PushPlan",
    "PushResult",
    "RetryPolicy",
    "ShardUpload",
    "UploadProgress",
    "call_with_retries",
    "check_key_outside",
    "is_transient",
    "push_protected",
    "push_stream",
    "push_streams",
    "scan_dataset_for_secret",
]
