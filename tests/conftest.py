from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Before datasets / huggingface_hub are imported (both read these at import time): every Hub call of the test
# session goes to the local test Hub (tests/hub_server.py), never to huggingface.co, and caches go to a temp dir.
# Processes the tests start (Ray's workers import this module again) inherit the session's port and caches.
_INHERITED = "HF_POSCUDA_TEST_HUB_PORT" in os.environ
HUB_PORT = int(os.environ["HF_POSCUDA_TEST_HUB_PORT"]) if _INHERITED else _free_port()
os.environ["HF_POSCUDA_TEST_HUB_PORT"] = str(HUB_PORT)
HUB_TOKEN = "hf_test_token_of_alice"
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{HUB_PORT}"
os.environ["HF_HUB_DISABLE_XET"] = "1"
if not _INHERITED:
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-poscuda-tests-hf-home-")
    atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
os.environ["HF_TOKEN"] = HUB_TOKEN
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("HF_DATASETS_OFFLINE", None)

import io  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
from datasets import Audio, ClassLabel, Dataset, Features, Value  # noqa: E402

from hf_poscuda import PosCUDAKey  # noqa: E402
from tests.hub_server import HubServer  # noqa: E402


def load_example(name: str):
    """The module ``examples/{name}.py`` (the examples are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wav_bytes(array: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    """Encode ``[samples]`` or ``[channels, samples]`` as WAV bytes."""
    buffer = io.BytesIO()
    data = np.asarray(array, dtype=np.float32)
    sf.write(buffer, data.T if data.ndim == 2 else data, sr, format="WAV", subtype=subtype)
    return buffer.getvalue()


def decode(item: dict) -> tuple[np.ndarray, int]:
    """``{"bytes", "path"}`` -> float32 ``[channels, samples]`` and rate."""
    data, sr = sf.read(io.BytesIO(item["bytes"]), dtype="float32", always_2d=True)
    return data.T, sr


def speechlike(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Silence, then a harmonic burst with an envelope, then silence: an 'utterance' in the middle."""
    t = np.arange(n) / sr
    f0 = rng.uniform(100, 300)
    tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 6))
    env = np.zeros(n)
    a, b = int(0.25 * n), int(0.75 * n)
    env[a:b] = np.hanning(b - a)
    return (0.3 * tone * env + 0.001 * rng.standard_normal(n)).astype(np.float32)


def make_dataset(
    n: int = 24, sr: int = 8000, num_classes: int = 4, seed: int = 0, min_len: float = 0.3, max_len: float = 1.0
) -> Dataset:
    rng = np.random.default_rng(seed)
    audio, labels, ids = [], [], []
    for i in range(n):
        length = int(rng.uniform(min_len, max_len) * sr)
        audio.append({"bytes": wav_bytes(speechlike(rng, length, sr), sr), "path": f"clip_{i}.wav"})
        labels.append(i % num_classes)
        ids.append(f"id-{i}")
    features = Features(
        {"audio": Audio(), "label": ClassLabel(names=[f"c{i}" for i in range(num_classes)]), "id": Value("string")}
    )
    return Dataset.from_dict({"audio": audio, "label": labels, "id": ids}, features=features)


@pytest.fixture
def key() -> PosCUDAKey:
    return PosCUDAKey(bytes(range(32)))


@pytest.fixture
def other_key() -> PosCUDAKey:
    return PosCUDAKey(bytes(range(1, 33)))


@pytest.fixture
def dataset() -> Dataset:
    return make_dataset()


@pytest.fixture(scope="session")
def _hub_session():
    server = HubServer(HUB_PORT, tokens={HUB_TOKEN: "alice", "hf_test_token_of_bob": "bob"}).start()
    yield server
    server.stop()


@pytest.fixture
def hub(_hub_session):
    """The local test Hub (empty at the start of each test); the session's HF_TOKEN belongs to user "alice"."""
    _hub_session.reset()
    return _hub_session
