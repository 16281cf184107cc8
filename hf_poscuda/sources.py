"""Dataset sources: load one (embedded FSDD subset, FSDD, save_to_disk/audiofolder/Hub) and find its license."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features, Value

logger = logging.getLogger(__name__)

_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
FSDD_TEST_UTTERANCES = range(0, 5)  # the official FSDD split: utterances 0-4 are test


def fsdd_features(speakers: Sequence[str] | None = None) -> Features:
    """FSDD's columns. ``label`` is the digit, or with ``speakers`` (the speaker names in class order) the speaker."""
    return Features(
        {
            "audio": Audio(),
            "label": ClassLabel(names=list(speakers) if speakers is not None else [str(d) for d in range(10)]),
            "speaker": Value("string"),
            "digit": Value("int32"),
            "utterance": Value("int32"),
        }
    )


FSDD_TEST_SPEAKERS = ("nicolas", "theo")  # the speaker-disjoint split: train on the other four speakers
FSDD_TEST_DIGITS = (7, 8, 9)  # the digit-disjoint split of the speaker task: speakers heard on other words
FsddSplit = Literal["official", "speaker", "digit"]
FsddTask = Literal["digits", "speakers"]


def load_fsdd(
    root: str | os.PathLike[str], split: FsddSplit = "official", sampling_rate: int | None = None,
    task: FsddTask = "digits",
) -> DatasetDict:
    """Load Free Spoken Digit Dataset recordings (``{digit}_{speaker}_{index}.wav``) into train and test splits.

    Files anywhere under ``root`` are read into memory (audio bytes are embedded, so the result does not depend
    on ``root`` staying in place); rows are sorted by file name.

    Args:
        root (`str` or `os.PathLike`): a folder holding FSDD ``.wav`` files (e.g. FSDD's ``recordings/``).
        split (`str`, defaults to `"official"`): ``"official"`` (utterances 0-4 of every speaker are test, the
            rest train); for digits, ``"speaker"`` (speaker-disjoint: :data:`FSDD_TEST_SPEAKERS` are test, the
            other speakers train; harder, as a model must generalise to new voices); for speakers, ``"digit"``
            (digit-disjoint: :data:`FSDD_TEST_DIGITS` are test, so a model must recognise a voice on words it
            never heard from it).
        sampling_rate (`int`, *optional*): resample every clip to this rate (polyphase, stored as 32-bit float
            WAV so nothing is rounded); ``None`` keeps FSDD's 8 kHz.
        task (`str`, defaults to `"digits"`): what ``label`` holds: the spoken digit (``"digits"``, 10 classes)
            or the speaker (``"speakers"``: a privacy task, one class per speaker found, in name order).

    Example:

    ```py
    >>> from hf_poscuda.sources import fsdd_mini_path, load_fsdd
    >>> ds = load_fsdd(fsdd_mini_path(), task="speakers", split="digit")
    >>> ds["train"].features["label"].names, sorted(set(ds["test"]["digit"]))
    (['george', 'jackson', 'lucas', 'nicolas', 'theo', 'yweweler'], [7, 8, 9])

    ```
    """
    splits = {"digits": ("official", "speaker"), "speakers": ("official", "digit")}
    if task not in splits:
        raise ValueError(f"task must be one of {list(splits)}, got {task!r}.")
    if split not in splits[task]:
        raise ValueError(f"split must be one of {list(splits[task])} for task {task!r}, got {split!r}.")
    files = sorted(p for p in Path(root).rglob("*.wav") if _FSDD_NAME.match(p.name))
    if not files:
        raise ValueError(f"No FSDD files named like '7_jackson_32.wav' under {str(root)!r}.")
    names = [_FSDD_NAME.match(p.name) for p in files]
    speakers = sorted({m.group(2) for m in names if m is not None}) if task == "speakers" else None
    columns: dict[str, dict[str, list[Any]]] = {"train": _empty_columns(), "test": _empty_columns()}
    for path, m in zip(files, names, strict=True):
        assert m is not None
        digit, speaker, utterance = int(m.group(1)), m.group(2), int(m.group(3))
        if split == "official":
            is_test = utterance in FSDD_TEST_UTTERANCES
        elif split == "speaker":
            is_test = speaker in FSDD_TEST_SPEAKERS
        else:
            is_test = digit in FSDD_TEST_DIGITS
        c = columns["test" if is_test else "train"]
        c["audio"].append({"bytes": _resampled(path, sampling_rate), "path": path.name})
        c["label"].append(speakers.index(speaker) if speakers is not None else digit)
        c["speaker"].append(speaker)
        c["digit"].append(digit)
        c["utterance"].append(utterance)
    return DatasetDict(
        {name: Dataset.from_dict(c, features=fsdd_features(speakers)) for name, c in columns.items() if c["audio"]}
    )


def speaker_folder_features(speakers: Sequence[str]) -> Features:
    """The columns of :func:`load_speaker_folder`: ``label`` is the speaker (``speakers`` in class order)."""
    return Features(
        {
            "audio": Audio(),
            "label": ClassLabel(names=list(speakers)),
            "speaker": Value("string"),
            "utterance": Value("string"),
            "window": Value("int32"),
        }
    )


SPEAKER_FOLDER_AUDIO = (".flac", ".wav")


def load_speaker_folder(
    root: str | os.PathLike[str], sampling_rate: int = 8000, clip_seconds: float = 1.0, test_utterances: int = 3,
    silence_db: float = 30.0,
) -> DatasetDict:
    """Load a speaker-identification corpus laid out as ``root/<speaker>/<utterance>.flac`` (or ``.wav``) into
    train and test splits of fixed-length windows, ``label`` being the speaker: a privacy task on real recordings
    beside FSDD's (e.g. the LibriSpeech test-other subset of the Resemblyzer repository, see
    ``docs/results/speakers.md``).

    Each speaker's utterances are taken in file-name order; the last ``test_utterances`` of them are test, the rest
    train, so no utterance is on both sides. Every utterance is mixed to mono, resampled, and cut into consecutive
    windows of ``clip_seconds`` (a shorter tail is dropped); a window more than ``silence_db`` below its utterance's
    RMS is silence and is dropped.

    Args:
        root (`str` or `os.PathLike`): the corpus folder, one sub-folder per speaker (its name is the class name).
        sampling_rate (`int`, defaults to `8000`): the rate of the returned audio (polyphase resampling, stored as
            32-bit float WAV).
        clip_seconds (`float`, defaults to `1.0`): window length.
        test_utterances (`int`, defaults to `3`): utterances per speaker that are test.
        silence_db (`float`, defaults to `30.0`): windows this far below their utterance's RMS are dropped.

    Raises:
        ValueError: no speaker folder with audio under ``root``, or a speaker with too few utterances for the split.

    Example:

    ```py
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np, soundfile as sf
    >>> from hf_poscuda.sources import load_speaker_folder
    >>> root = Path(tempfile.mkdtemp())
    >>> for speaker in ("ann", "bob"):
    ...     (root / speaker).mkdir()
    ...     for i in range(4):
    ...         sf.write(root / speaker / f"{i}.wav", np.random.default_rng(i).normal(0, 0.1, 3 * 16000), 16000)
    >>> ds = load_speaker_folder(root, test_utterances=1)
    >>> ds["train"].num_rows, ds["test"].num_rows, ds["test"].features["label"].names, ds["test"]["utterance"][:3]
    (18, 6, ['ann', 'bob'], ['3', '3', '3'])

    ```
    """
    import soundfile as sf

    from .audio_io import encode_audio
    from .quality import change_rate

    if test_utterances < 1 or clip_seconds <= 0:
        raise ValueError(f"test_utterances must be >= 1 and clip_seconds > 0, got {test_utterances}, {clip_seconds}.")
    folders = {d.name: sorted(f for f in d.iterdir() if f.suffix.lower() in SPEAKER_FOLDER_AUDIO)
               for d in sorted(Path(root).iterdir()) if d.is_dir()} if Path(root).is_dir() else {}
    folders = {name: files for name, files in folders.items() if files}
    if not folders:
        raise ValueError(f"No speaker folders with {'/'.join(SPEAKER_FOLDER_AUDIO)} files under {str(root)!r}; "
                         "expected root/<speaker>/<utterance>.flac.")
    short = [name for name, files in folders.items() if len(files) <= test_utterances]
    if short:
        raise ValueError(f"Speakers {short} have at most {test_utterances} utterances: none would be left to train "
                         "on. Lower test_utterances or leave those speakers out.")
    speakers = list(folders)
    width = int(round(clip_seconds * sampling_rate))
    columns: dict[str, dict[str, list[Any]]] = {
        split: {"audio": [], "label": [], "speaker": [], "utterance": [], "window": []} for split in ("train", "test")
    }
    for label, (speaker, files) in enumerate(folders.items()):
        for index, path in enumerate(files):
            data, sr = sf.read(path, dtype="float32", always_2d=True)
            mono = change_rate(data.mean(axis=1), sr, sampling_rate).astype(np.float32)
            floor = np.sqrt(np.mean(mono**2)) * 10 ** (-silence_db / 20)
            c = columns["test" if index >= len(files) - test_utterances else "train"]
            for w in range(len(mono) // width):
                clip = mono[w * width : (w + 1) * width]
                if np.sqrt(np.mean(clip**2)) < floor:
                    continue
                c["audio"].append({"bytes": encode_audio(clip[None], sampling_rate), "path": f"{path.stem}_{w}.wav"})
                c["label"].append(label)
                c["speaker"].append(speaker)
                c["utterance"].append(path.stem)
                c["window"].append(w)
    features = speaker_folder_features(speakers)
    return DatasetDict({name: Dataset.from_dict(c, features=features) for name, c in columns.items()})


def _resampled(path: Path, sampling_rate: int | None) -> bytes:
    if sampling_rate is None:
        return path.read_bytes()
    import soundfile as sf

    from .audio_io import encode_audio
    from .quality import change_rate

    data, sr = sf.read(path, dtype="float32", always_2d=True)
    return encode_audio(np.ascontiguousarray(change_rate(data.T, sr, sampling_rate), dtype=np.float32), sampling_rate)


def is_fsdd_folder(path: str | os.PathLike[str]) -> bool:
    """A folder of FSDD-named ``.wav`` files without an audiofolder ``metadata.csv``."""
    p = Path(path)
    if (p / "metadata.csv").is_file():
        return False
    wavs = [f.name for f in p.glob("*.wav")][:50]
    return bool(wavs) and all(_FSDD_NAME.match(n) for n in wavs)


def _empty_columns() -> dict[str, list[Any]]:
    return {"audio": [], "label": [], "speaker": [], "digit": [], "utterance": []}


def fsdd_mini_path() -> Path:
    """Folder of the embedded FSDD subset shipped with the package (360 clips; see its ATTRIBUTION.md)."""
    return Path(str(resources.files("hf_poscuda") / "data" / "fsdd_mini"))


def load_fsdd_mini() -> DatasetDict:
    """The embedded default dataset: 360 FSDD clips (CC BY-SA 4.0), ``train`` (240) and ``test`` (120)."""
    return load_fsdd(fsdd_mini_path())


def load_audio_dataset(source: str, split: str | None = None, config: str | None = None) -> Dataset | DatasetDict:
    """Load a dataset from a ``save_to_disk`` folder, an audiofolder folder, an FSDD recordings folder, or a Hub id.

    Args:
        source (`str`): a local folder or a Hub dataset id (``"user/name"``).
        split (`str`, *optional*): return only this split.
        config (`str`, *optional*): the Hub dataset's config name.

    Raises:
        ValueError: the source or split does not exist; the message lists what does.
    """
    from datasets import load_dataset, load_from_disk

    path = Path(source)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
            try:
                loaded = load_from_disk(str(path))
            except IndexError:  # datasets 5.2 cannot load a saved split with no rows
                raise ValueError(
                    f"Could not load {source!r}: a split in it is empty (datasets cannot load empty saved splits). "
                    "There is nothing to protect in an empty split; check the source."
                ) from None
        elif is_fsdd_folder(path) or path.resolve() == fsdd_mini_path().resolve():
            # the embedded subset has an audiofolder metadata.csv, but audiofolder would take its train/ and
            # test/ folder names for labels: read it as FSDD (digit labels from the file names)
            loaded = load_fsdd(path)
        else:
            loaded = load_dataset("audiofolder", data_dir=str(path))
    elif path.exists():
        raise ValueError(f"{source!r} is a file; expected a save_to_disk folder, an audiofolder folder or a Hub id.")
    else:
        if source.startswith((".", "/", "~")) or source.count("/") > 1:
            raise ValueError(f"Local folder {source!r} does not exist.")
        loaded = load_dataset(source, config)
    if split is None:
        return loaded
    if isinstance(loaded, Dataset):
        return loaded
    if split not in loaded:
        raise ValueError(f"Split {split!r} not found in {source!r}; available splits: {list(loaded)}.")
    return loaded[split]


FSDD_LICENSE = "cc-by-sa-4.0"
FSDD_ATTRIBUTION = (
    "Audio from the Free Spoken Digit Dataset (FSDD) by Zohar Jackson et al., "
    "https://github.com/Jakobovski/free-spoken-digit-dataset, licensed CC BY-SA 4.0. Changes: every clip was "
    "filtered by PosCUDA as described above."
)


@dataclass
class SourceInfo:
    """What is known about where a dataset came from, for its card.

    Args:
        name (`str`): a Hub id, or a local folder's name (never its full path: that could reveal private details).
        is_hub (`bool`): whether ``name`` is a Hub dataset id.
        license (`str`, *optional*): the license id, when the source states it.
        attribution (`str`, *optional*): attribution text the license asks for, when known.
    """

    name: str
    is_hub: bool
    license: str | None = None
    attribution: str | None = None


def source_name(source: str) -> str:
    """How to name ``source`` in public text: a Hub id as is, a local folder by its name only (not its path)."""
    path = Path(source)
    return path.resolve().name if path.exists() else source


def source_info(source: str) -> SourceInfo:
    """Find the license of ``source``: the YAML of its README.md (a Hub card or a local folder's README.md);
    FSDD recordings folders are known to be CC BY-SA 4.0. Unknown stays ``None`` (the caller must ask)."""
    from huggingface_hub import DatasetCard

    path = Path(source)
    if path.is_dir():
        info = SourceInfo(source_name(source), is_hub=False)
        if is_fsdd_folder(path) or path.resolve() == fsdd_mini_path().resolve():
            return SourceInfo(info.name, False, FSDD_LICENSE, FSDD_ATTRIBUTION)
        readme = path / "README.md"
        if readme.is_file():
            info.license = _license_of(DatasetCard.load(readme).data.to_dict())
        return info
    info = SourceInfo(source, is_hub=True)
    try:
        info.license = _license_of(DatasetCard.load(source, repo_type="dataset").data.to_dict())
    except Exception as err:  # no card, offline, gated...: the caller asks for --license
        logger.info("Could not read the card of %s (%s); its license is unknown.", source, type(err).__name__)
    return info


def _license_of(metadata: dict[str, Any]) -> str | None:
    value = metadata.get("license")
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    return value if isinstance(value, str) and value else None
