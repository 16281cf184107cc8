"""A speech corpus built offline with ``espeak-ng``: the pretraining data for the fine-tuning threat.

The realistic adversary fine-tunes a model pretrained on other speech. No checkpoint can be downloaded here, so
the evaluation pretrains its own on synthetic speech: a few hundred English words, each spoken by many
``espeak-ng`` voices and voice variants at random rates and pitches, with light augmentation (gain, a random
spectral tilt, background noise, a random onset) so that a model learns words rather than the synthesiser.
None of it is FSDD audio. The digit words can be kept or left out (:attr:`SpeechCorpusConfig.include_digits`),
since the evaluation task is spoken digits.

Example:

```py
>>> from hf_poscuda.evaluation.corpus import SpeechCorpusConfig, build_speech_corpus
>>> corpus = build_speech_corpus(SpeechCorpusConfig(words=("cat", "dog"), include_digits=False, renditions=3))
>>> corpus["train"].num_rows, corpus["test"].num_rows, corpus["train"].features["label"].names
(4, 2, ['cat', 'dog'])

```
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: Common English words (no digit words): the default vocabulary.
WORDS = tuple("""
about above across act add after again age ago air all almost alone along also always am among and animal answer
any apple area arm around art ask away baby back bad ball bank bed before begin behind below best better between
big bird black blue boat body book both box boy bread bring brother brown build burn bus buy call came camp car
card care carry case cat catch cause cell chair chance change check child city class clean clear climb clock close
cloud coat cold color come cook cool corn cost could count cover cross cry cup cut dark day dead deal deep desk
dog door down draw dream dress drink drive drop dry duck during dust each early earth east easy eat edge egg end
enough even ever every eye face fact fall family far farm fast father fear feel field fill find fine fire fish
flat floor flower fly follow food foot force forest form free fresh friend from front fruit full game garden gas
gate girl give glass go gold good grass gray great green ground group grow half hand happy hard hat have head hear
heart heat heavy help here high hill hold hole home hope horse hot hour house huge hunt ice idea inch iron island
job join joy jump just keep kind king kitchen knee knife know lake land large last late laugh lead leaf learn left
leg letter life light like line lion list little live long look lost loud love low machine make man many map mark
market may meat meet metal middle milk mind minute miss money moon morning mother mountain mouth move much music
name near neck need never new next nice night noise north nose note now ocean off office often oil old only open
orange other out over page paint paper park part party pass path pay pen people pick picture piece place plain
plan plant play please pocket point pool poor pull push queen question quick quiet radio rain read ready red rest
rich ride right ring river road rock roof room root rope round rule run safe salt sand save say school sea seat
see sell send sharp sheep ship shoe shop short show side sign silver simple sing sister sit size skin sky sleep
slow small smile snow soft soil song soon sound south space speak speed spring square stand star start station
stay step stick still stone stop store story street strong study sugar summer sun table tail take talk tall tea
teach team tell thank their then thick thin thing think through tiny today together top touch town toy track train
tree trip true try turn under until up use valley very voice wait walk wall want warm wash watch water wave way
weather week well west wet what wheel white whole wide wild wind window winter wish with woman wood word work
world write wrong yard year yellow yes young
""".split())

#: ``espeak-ng`` English voices of the base install (no MBROLA), and its voice variants (``voice+variant``).
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Alex", "Andy", "Annie",
            "aunty", "belinda", "boris", "david", "ed", "edward", "iven", "john", "linda", "max", "michel", "norbert",
            "paul", "quincy", "rob", "steph", "travis", "victor", "grandma", "grandpa", "klatt", "klatt2", "klatt3")


@dataclass(frozen=True)
class SpeechCorpusConfig:
    """What :func:`build_speech_corpus` synthesises.

    Args:
        words (`tuple[str, ...]`, defaults to :data:`WORDS`): the vocabulary; one class per word.
        include_digits (`bool`, defaults to `True`): add :data:`DIGIT_WORDS` (``"zero"``..``"nine"``) as classes.
        renditions (`int`, defaults to `16`): clips per word, each with its own voice, variant, rate and pitch.
        sampling_rate (`int`, defaults to `8000`): output rate (``espeak-ng`` speaks at 22 050 Hz; resampled).
        test_fraction (`float`, defaults to `0.15`): renditions per word held out as the ``test`` split.
        rates (`tuple[int, int]`, defaults to `(120, 230)`): words per minute, drawn uniformly.
        pitches (`tuple[int, int]`, defaults to `(20, 80)`): ``espeak-ng`` pitch (0–99), drawn uniformly.
        noise_snr_db (`tuple[float, float]`, defaults to `(15.0, 40.0)`): white-noise SNR, drawn uniformly.
        seed (`int`, defaults to `0`): every random choice derives from it, so a corpus is reproducible.
    """

    words: tuple[str, ...] = WORDS
    include_digits: bool = True
    renditions: int = 16
    sampling_rate: int = 8000
    test_fraction: float = 0.15
    rates: tuple[int, int] = (120, 230)
    pitches: tuple[int, int] = (20, 80)
    noise_snr_db: tuple[float, float] = (15.0, 40.0)
    seed: int = 0
    voices: tuple[str, ...] = field(default=VOICES, repr=False)
    variants: tuple[str, ...] = field(default=VARIANTS, repr=False)

    def __post_init__(self) -> None:
        vocabulary = self.vocabulary
        if not vocabulary:
            raise ValueError("words is empty: give at least one word (or include_digits=True).")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("words repeat (digit words are added by include_digits; do not list them twice).")
        bad = [w for w in vocabulary if not w.isalpha()]
        if bad:
            raise ValueError(f"Words must be plain letters (they are passed to espeak-ng), got {bad[:5]}.")
        if not isinstance(self.renditions, int) or self.renditions < 2:
            raise ValueError(f"renditions must be an int >= 2 (one for train, one for test), got {self.renditions!r}.")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}.")
        if self.sampling_rate < 4000:
            raise ValueError(f"sampling_rate must be >= 4000 Hz, got {self.sampling_rate!r}.")
        for name, (lo, hi) in (("rates", self.rates), ("pitches", self.pitches), ("noise_snr_db", self.noise_snr_db)):
            if not lo <= hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)!r}.")

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The class names: ``words`` (less digit words unless ``include_digits``) then the digit words."""
        words = tuple(w for w in self.words if w not in DIGIT_WORDS or self.include_digits)
        return words + tuple(d for d in DIGIT_WORDS if self.include_digits and d not in words)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["words"] = len(self.vocabulary)  # the list itself is in the dataset's ClassLabel
        return out


def espeak_binary() -> str:
    """Path of ``espeak-ng``, or a clear error saying how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise FileNotFoundError(
            "espeak-ng is not installed; it synthesises the pretraining corpus. Install it with "
            "`apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)."
        )
    return path


def speak(word: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
    """One word from ``espeak-ng`` as float32 mono samples and their rate."""
    import soundfile as sf

    done = subprocess.run(
        [espeak_binary(), "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", word],
        capture_output=True, check=False, timeout=60,
    )
    if done.returncode != 0 or not done.stdout:
        raise RuntimeError(f"espeak-ng failed for voice {voice!r}: {done.stderr.decode(errors='replace').strip()}")
    data, sr = sf.read(io.BytesIO(done.stdout), dtype="float32")
    return data, int(sr)


def _augment(x: np.ndarray, sampling_rate: int, rng: np.random.Generator, config: SpeechCorpusConfig) -> np.ndarray:
    """Trim silence, then a random onset (0–150 ms), gain (-12..0 dB), first-order spectral tilt and white noise."""
    loud = np.flatnonzero(np.abs(x) > 0.01 * (np.abs(x).max() + 1e-9))
    if loud.size:
        x = x[loud[0] : loud[-1] + 1]
    tilt = rng.uniform(-0.6, 0.6)
    x = np.append(x[:1], x[1:] - tilt * x[:-1])
    x = np.concatenate([np.zeros(int(rng.uniform(0, 0.15) * sampling_rate)), x])
    x = x / (np.abs(x).max() + 1e-9) * 10 ** (rng.uniform(-12, 0) / 20) * 0.9
    power = np.mean(x**2) + 1e-12
    x = x + rng.normal(0, np.sqrt(power / 10 ** (rng.uniform(*config.noise_snr_db) / 10)), x.shape)
    return np.clip(x, -1, 1).astype(np.float32)


def _wav_bytes(x: np.ndarray, sampling_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, sampling_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def build_speech_corpus(config: SpeechCorpusConfig | None = None, num_workers: int = 2) -> Any:
    """Synthesise the corpus: a ``DatasetDict`` with ``train`` and ``test`` splits, columns ``audio`` (16-bit WAV
    at ``config.sampling_rate``), ``label`` (a ``ClassLabel`` of the words), ``word`` and ``voice``.

    The split is by rendition: the last ``test_fraction`` of each word's renditions form ``test``, so both
    splits hold every word. The rows and their bytes depend only on ``config`` (not on ``num_workers``).
    """
    from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features, Value
    from tqdm.auto import tqdm

    from ..quality import change_rate

    config = config or SpeechCorpusConfig()
    espeak_binary()
    vocabulary = config.vocabulary
    rng = np.random.default_rng(config.seed)
    jobs = []
    for label, word in enumerate(vocabulary):
        for r in range(config.renditions):
            voice = f"{config.voices[rng.integers(len(config.voices))]}+{config.variants[rng.integers(len(config.variants))]}"
            jobs.append((label, word, r, voice, int(rng.integers(config.rates[0], config.rates[1] + 1)),
                         int(rng.integers(config.pitches[0], config.pitches[1] + 1)), int(rng.integers(2**31))))
    n_test = min(config.renditions - 1, max(1, int(round(config.test_fraction * config.renditions))))

    def make(job: tuple) -> dict[str, Any]:
        label, word, r, voice, rate, pitch, seed = job
        data, sr = speak(word, voice, rate, pitch)
        data = change_rate(data.astype(np.float64), sr, config.sampling_rate)
        audio = _augment(data, config.sampling_rate, np.random.default_rng(seed), config)
        return {"audio": {"bytes": _wav_bytes(audio, config.sampling_rate), "path": None}, "label": label,
                "word": word, "voice": voice, "test": r >= config.renditions - n_test}

    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        rows = list(tqdm(pool.map(make, jobs), total=len(jobs), desc="espeak-ng corpus"))
    features = Features({"audio": Audio(sampling_rate=config.sampling_rate), "label": ClassLabel(names=list(vocabulary)),
                         "word": Value("string"), "voice": Value("string")})
    splits = {}
    for name, held in (("train", False), ("test", True)):
        part = [{k: v for k, v in row.items() if k != "test"} for row in rows if row["test"] is held]
        splits[name] = Dataset.from_list(part, features=features)
    logger.info("Synthesised %d words x %d renditions at %d Hz", len(vocabulary), config.renditions,
                config.sampling_rate)
    return DatasetDict(splits)
