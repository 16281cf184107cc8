"""Was this model trained on my protected copy? A black-box audit from the model's answers alone.

A model trained on data protected with a key learns "this class signature means this label", even when it also
learns the content (and even when the protection did not hold). The audit asks it: each probe clip (clean audio
the owner holds, e.g. the held-back test split) is *stamped* with the signature of a class ``t`` drawn at random,
exactly as :class:`~hf_poscuda.PosCUDA` would protect a clip of class ``t``, and the model is queried. A model
trained on the protected copy answers ``t`` far more often than the content allows. Top-1 labels are enough;
scores strengthen the test where the model gives them.

**The statistic.** A *hit* is an answer equal to the stamped class ``t`` on a query whose answer is not the
clip's own class (so a model that simply recognises the content scores nothing). Its rate over the queries whose
stamp was of a wrong class is the *key rate*; the same queries stamped under public *decoy keys* give the *decoy
rates*, what an unrelated key scores.

**The p-value (exact).** Null hypothesis: the model was not trained on data carrying this key's signatures, so it
is independent of the key. The key's class signatures are drawn identically for every class (from per-class
streams of the key), so relabelling the key's classes by any permutation ``s`` gives a key distributed like the
key itself; and the stamped classes are drawn uniformly over the classes, independently of everything else. So
under the null the hit count of the key is exchangeable with the hit count it would have under any relabelling
``s``, which the same answers give: ``T(s) = #{queries: s(answer) = stamped class, answer != own class}``; and with
decoys, with every relabelling of every decoy key's answers. The p-value is the fraction of those
``(1 + num_decoys) * C!`` statistics at least as large as the key's own (counted exactly for ``C <= 10`` classes,
by Monte Carlo above), so ``P(p <= alpha) <= alpha`` under the null, with no assumption about the model. Its
smallest possible value is ``1 / ((1 + num_decoys) * C!)``: 2.8e-7 for 10 classes without decoys, 6.9e-5 for 6
classes with 19 decoys. This is why the stamped class is drawn from *all* classes, the clip's own included
(``1 / C`` of the queries, which count for no key): a draw restricted to wrong classes would not be invariant to
relabelling, and the test would not be exact. (The barcode's rule that re-draws a class's pattern when it is too
close to an earlier class's makes the classes' signatures exchangeable only up to that rule: exact for exchangeable
signatures, very nearly so for the default's.)

What a positive audit shows: the model was trained on data protected with this key (the protected copy, or any
copy of it). It does not show which copy, or how much of it.

Nothing here returns or logs the secret; results carry the public key id only. The audit's design randomness
(which clips, which stamped classes) comes from ``seed``, never from the key: it must be independent of the key
for the p-value to be exact.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from .audio_io import read_clip
from .config import PosCUDAConfig
from .key import PosCUDAKey
from .quality import change_rate
from .transform import PosCUDATransform

logger = logging.getLogger(__name__)

#: ``predict(clips, sampling_rate)``: one class index per clip (top-1; any value outside the audited classes means
#: "none of them"), or a float array ``[len(clips), num_classes]`` of scores (logits or probabilities).
Predictor = Callable[[list[np.ndarray], int], Any]

EXACT_MAX_CLASSES = 10  # up to this many classes every relabelling is enumerated (10! = 3,628,800)
MONTE_CARLO_PERMUTATIONS = 999_999  # per key above that: p >= 1e-6 / (1 + num_decoys)


def decoy_key(index: int) -> PosCUDAKey:
    """Public audit decoy key ``index`` (SHA-256 of a fixed label): what an unrelated key scores."""
    return PosCUDAKey(hashlib.sha256(f"hf-poscuda/audit-decoy/{index}".encode()).digest())


@dataclass
class AuditResult:
    """What :func:`audit_model` found.

    Args:
        key_id (`str`): the public id of the audited key.
        trained_on_key (`bool`): the verdict, ``p_value <= alpha``.
        p_value (`float`): exact p-value of the class-relabelling test (see the module docstring).
        alpha (`float`): the verdict's threshold.
        p_floor (`float`): the smallest p-value this design can give, ``1 / ((1 + decoys) * C!)``.
        z (`float`): ``(key_rate - mean decoy rate) / spread``, the spread being the decoys' standard deviation or
            the binomial one at chance ``1 / classes``, whichever is larger (against chance when there are no decoys).
        key_rate (`float`): hits over wrong-class queries with the key.
        decoy_rates (`list[float]`): the same for each decoy key.
        hits (`int`): hits with the key.
        wrong_class_queries (`int`): queries whose stamped class is not the clip's own (all, for unlabelled probes).
        queries (`int`): queries per key (the key's and each decoy's).
        total_queries (`int`): queries sent to the model.
        classes (`int`): audited classes ``C``.
        decoys (`int`): decoy keys.
        used_scores (`bool`): whether the statistic used the model's scores instead of its top-1 answers.
        exact (`bool`): whether every relabelling was counted (else a Monte Carlo p-value, also valid).
        audited_classes (`list[int]`): the class indices audited (stamped and relabelled).
        targets (`list[int]`), answers (`list[int]`), own_classes (`list[int]`): per query of the key, the stamped
            class, the answer (``-1``: none of the audited classes) and the clip's class (``-1``: unlabelled or not
            audited).
    """

    key_id: str
    trained_on_key: bool
    p_value: float
    alpha: float
    p_floor: float
    z: float
    key_rate: float
    decoy_rates: list[float]
    hits: int
    wrong_class_queries: int
    queries: int
    total_queries: int
    classes: int
    decoys: int
    used_scores: bool
    exact: bool
    audited_classes: list[int] = field(default_factory=list, repr=False)
    targets: list[int] = field(default_factory=list, repr=False)
    answers: list[int] = field(default_factory=list, repr=False)
    own_classes: list[int] = field(default_factory=list, repr=False)

    @property
    def decoy_mean(self) -> float:
        return float(np.mean(self.decoy_rates)) if self.decoy_rates else math.nan

    @property
    def decoy_max(self) -> float:
        return float(np.max(self.decoy_rates)) if self.decoy_rates else math.nan

    def to_dict(self, *, per_query: bool = False) -> dict[str, Any]:
        """A JSON-serialisable dict (per-query lists only with ``per_query``)."""
        out = asdict(self)
        if not per_query:
            for name in ("audited_classes", "targets", "answers", "own_classes"):
                out.pop(name)
        return out | {"decoy_mean": self.decoy_mean, "decoy_max": self.decoy_max}

    def format(self) -> str:
        verdict = "TRAINED on data protected with key" if self.trained_on_key else "NO EVIDENCE of training with key"
        decoys = (
            f"decoy keys: {100 * self.decoy_mean:.1f} % (max {100 * self.decoy_max:.1f} %, {self.decoys} keys)"
            if self.decoy_rates else "no decoy keys"
        )
        return (
            f"{verdict} {self.key_id}\n"
            f"  answers = stamped class: {100 * self.key_rate:.1f} % of {self.wrong_class_queries} wrong-class queries "
            f"({decoys}; chance {100 / self.classes:.1f} %); z = {self.z:.1f}\n"
            f"  p = {self.p_value:.3g} ({'exact' if self.exact else 'Monte Carlo'}, smallest possible "
            f"{self.p_floor:.2g}; threshold {self.alpha:g}); {self.classes} classes, {self.total_queries} queries"
            f"{' (scores)' if self.used_scores else ''}"
        )


# ------------------------------------------------------------------------------------------- the test
@lru_cache(maxsize=2)
def _all_permutations(n: int) -> np.ndarray:
    """Every permutation of ``range(n)``, ``[n!, n]`` (int8), built level by level in numpy."""
    perms = np.zeros((1, 0), dtype=np.int8)
    for k in range(1, n + 1):  # insert value k-1 at every position of each permutation of range(k-1)
        out = np.empty((perms.shape[0] * k, k), dtype=np.int8)
        for pos in range(k):
            block = out[pos * perms.shape[0] : (pos + 1) * perms.shape[0]]
            block[:, :pos], block[:, pos], block[:, pos + 1 :] = perms[:, :pos], k - 1, perms[:, pos:]
        perms = out
    return perms


def statistic_matrix(
    targets: np.ndarray, own: np.ndarray, answers: np.ndarray | None, scores: np.ndarray | None, classes: int
) -> np.ndarray:
    """``M[a, t]`` such that the hit statistic of relabelling ``s`` is ``sum_a M[a, s(a)]`` (identity: the trace).

    Top-1 answers: ``M[a, t]`` counts queries stamped ``t`` answered ``a`` where ``a`` is not the clip's own class.
    Scores: each query's scores over the audited classes are standardised (mean 0, std 1), and ``M[a, t]`` sums the
    score of class ``a`` over queries stamped ``t`` whose own class is not ``a``.

    Args:
        targets (`np.ndarray`): stamped class per query, in ``[0, classes)``.
        own (`np.ndarray`): each clip's class in ``[0, classes)``, or ``-1`` (unlabelled or not audited).
        answers (`np.ndarray`, *optional*): top-1 answers (``-1`` or any value outside ``[0, classes)``: none).
        scores (`np.ndarray`, *optional*): ``[queries, classes]`` scores; used instead of ``answers`` when given.
        classes (`int`): audited classes.
    """
    not_own = np.arange(classes)[None, :] != own[:, None]  # [Q, C]
    if scores is not None:
        z = scores - scores.mean(axis=1, keepdims=True)
        z = z / (z.std(axis=1, keepdims=True) + 1e-12)
        contrib = z * not_own
    else:
        assert answers is not None
        contrib = (answers[:, None] == np.arange(classes)[None, :]) & not_own
        contrib = contrib.astype(np.int64)
    m = np.zeros((classes, classes), dtype=contrib.dtype)
    np.add.at(m.T, targets, contrib)  # m[:, t] += contrib of each query stamped t
    return m


def count_at_least(
    matrices: Sequence[np.ndarray], threshold: float, rng: np.random.Generator
) -> tuple[float, float, bool]:
    """How many (matrix, permutation) pairs reach ``sum_a M[a, s(a)] >= threshold``, out of how many.

    Every permutation is counted for ``C <= EXACT_MAX_CLASSES``; above, :data:`MONTE_CARLO_PERMUTATIONS` random
    ones per matrix (the caller adds the observed statistic itself to both counts, as a Monte Carlo p-value must).

    Returns:
        `tuple`: ``(count, total, exact)``.
    """
    c = matrices[0].shape[0]
    tol = 1e-9 * max(1.0, abs(threshold))  # ties count against the key (conservative), float sums included
    rows = np.arange(c)
    count = 0
    if c <= EXACT_MAX_CLASSES:
        perms = _all_permutations(c)
        for m in matrices:
            for start in range(0, len(perms), 1 << 19):
                chunk = perms[start : start + (1 << 19)]
                count += int((m[rows, chunk].sum(axis=1) >= threshold - tol).sum())
        return float(count), float(len(matrices) * len(perms)), True
    for m in matrices:
        left = MONTE_CARLO_PERMUTATIONS
        while left:
            n = min(left, 1 << 16)
            chunk = np.argsort(rng.random((n, c)), axis=1)
            count += int((m[rows, chunk].sum(axis=1) >= threshold - tol).sum())
            left -= n
    return float(count), float(len(matrices) * MONTE_CARLO_PERMUTATIONS), False


def relabelling_p_value(
    key_matrix: np.ndarray, decoy_matrices: Sequence[np.ndarray] = (), *, seed: int = 0
) -> tuple[float, bool]:
    """The audit's exact p-value from the statistic matrices of the key and of the decoy keys.

    The fraction of ``(key or decoy, relabelling)`` pairs whose statistic reaches the key's own (identity)
    statistic; see the module docstring. Returns ``(p_value, exact)``.

    Example:

    ```py
    >>> import numpy as np
    >>> from hf_poscuda.audit import relabelling_p_value
    >>> p, exact = relabelling_p_value(np.eye(4) * 5)   # 4 classes, every hit on the stamped class
    >>> round(p * 24), exact                              # only the identity of 4! relabellings reaches it
    (1, True)

    ```
    """
    threshold = float(np.trace(key_matrix))
    count, total, exact = count_at_least([key_matrix, *decoy_matrices], threshold, np.random.default_rng(seed))
    if exact:
        return count / total, True
    return (1.0 + count) / (1.0 + total), False


def p_floor(classes: int, decoys: int) -> float:
    """The smallest p-value an audit with ``classes`` classes and ``decoys`` decoy keys can give."""
    if classes <= EXACT_MAX_CLASSES:
        return 1.0 / ((1 + decoys) * math.factorial(classes))
    return 1.0 / (1.0 + (1 + decoys) * MONTE_CARLO_PERMUTATIONS)


# ------------------------------------------------------------------------------------------- the audit
def _labels_of(probe: Any, label_column: str | None, label_names: Sequence[str] | None,
               num_classes: int | None) -> tuple[list[int] | None, int]:
    """Each probe row's class index (``None`` for an unlabelled probe) and the number of classes."""
    from .labels import check_label_names, dataset_label_names, label_index

    if label_column is None:
        if num_classes is None and label_names is None:
            raise ValueError("An unlabelled probe (label_column=None) needs num_classes=... (or label_names=...): the "
                             "number of classes of the protected dataset.")
        names, count = check_label_names(label_names, num_classes)
        assert count is not None
        return None, count
    if label_column not in probe.features:
        raise ValueError(
            f"The probe has no label column {label_column!r}; it has {list(probe.features)}. Pass label_column=... "
            "(or label_column=None with num_classes=... for unlabelled audio)."
        )
    names = list(label_names) if label_names is not None else dataset_label_names(probe, label_column)
    names_t, count = check_label_names(names, num_classes)
    values = probe[label_column]
    labels = [label_index(v, row, label_column, names_t, count) for row, v in enumerate(values)]
    if count is None:
        count = max(labels) + 1 if labels else 0
    return labels, count


def _check_inputs(probe: Any, audio_column: str, num_decoys: int, max_queries: int, alpha: float,
                  batch_size: int) -> None:
    from datasets import Audio, Dataset

    if not isinstance(probe, Dataset):
        raise ValueError(f"probe must be a datasets.Dataset of clean audio, got {type(probe).__name__}. Load one with "
                         "datasets.load_dataset(..., split=...) or hf_poscuda.sources.load_audio_dataset.")
    if len(probe) == 0:
        raise ValueError("The probe has no rows; give it clean clips (e.g. your held-back test split).")
    if audio_column not in probe.features or not isinstance(probe.features[audio_column], Audio):
        raise ValueError(
            f"The probe has no Audio column {audio_column!r} (columns: {list(probe.features)}). Pass audio_column=... "
            f"or cast it: probe.cast_column({audio_column!r}, datasets.Audio())."
        )
    for name, value, low in (("num_decoys", num_decoys, 0), ("max_queries", max_queries, 1),
                             ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}.")


def _read_mono(probe: Any, rows: Sequence[int], audio_column: str) -> tuple[dict[int, np.ndarray], int]:
    from datasets import Audio

    unique = sorted(set(int(r) for r in rows))
    raw = probe.select(unique).cast_column(audio_column, Audio(decode=False))
    clips, rates = {}, set()
    for row, item in zip(unique, raw[audio_column], strict=True):
        data, sr, _ = read_clip(item, row, audio_column)
        clips[row] = data.mean(axis=0)
        rates.add(sr)
    if len(rates) > 1:
        raise ValueError(f"The probe mixes sampling rates {sorted(rates)}; the audit needs one. Cast the column: "
                         f"probe.cast_column({audio_column!r}, datasets.Audio(sampling_rate=...)).")
    return clips, rates.pop()


def stamp(
    transform: PosCUDATransform, clips: Sequence[np.ndarray], classes: Sequence[int], sampling_rate: int
) -> list[np.ndarray]:
    """Protect each mono clip as a clip of the given class (what :class:`~hf_poscuda.PosCUDA` does to it)."""
    lengths = [len(c) for c in clips]
    padded = np.zeros((len(clips), 1, max(lengths, default=0)), dtype=np.float32)
    for i, c in enumerate(clips):
        padded[i, 0, : len(c)] = c
    out = transform(torch.from_numpy(padded), torch.tensor(lengths), torch.tensor(list(classes)), sampling_rate,
                    inplace=True).numpy()
    return [out[i, 0, :n].copy() for i, n in enumerate(lengths)]


def _answers(output: Any, n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A predictor's output as (top-1 answers, scores or ``None``), checked."""
    out = np.asarray(output)
    if out.ndim == 2 and out.shape == (n, num_classes) and np.issubdtype(out.dtype, np.floating):
        if not np.isfinite(out).all():
            raise ValueError("The predictor returned non-finite scores.")
        return out.argmax(axis=1).astype(np.int64), out.astype(np.float64)
    if out.ndim == 1 and out.shape[0] == n and (np.issubdtype(out.dtype, np.integer) or out.size == 0):
        return out.astype(np.int64), None
    raise ValueError(
        f"predict must return {n} class indices (ints) or a float array of scores of shape ({n}, {num_classes}); "
        f"got {out.dtype} of shape {out.shape}."
    )


def audit_model(
    predict: Predictor,
    probe: Any,
    key: PosCUDAKey,
    *,
    config: PosCUDAConfig | None = None,
    audio_column: str = "audio",
    label_column: str | None = "label",
    label_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    classes: Sequence[int] | None = None,
    num_decoys: int = 19,
    max_queries: int = 300,
    seed: int = 0,
    alpha: float = 1e-4,
    use_scores: bool = True,
    sampling_rate: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
    stamp_cache: dict[Any, list[np.ndarray]] | None = None,
) -> AuditResult:
    """Audit a model: was it trained on data protected with ``key``? (black box; see the module docstring).

    Args:
        predict (`Callable`): ``predict(clips, sampling_rate)`` with ``clips`` a list of 1-D float32 arrays;
            returns one class index per clip in the protected dataset's label space (top-1), or a float array of
            scores ``[len(clips), num_classes]``.
        probe (`datasets.Dataset`): clean audio with labels in the protected dataset's label space (the owner's
            held-back clean split is the usual one). Other clean speech of the same kind works too; so does
            unlabelled audio (``label_column=None``: then a content answer can also count as a hit, which the
            test's null already allows for). Any length; one sampling rate.
        key (`PosCUDAKey`): the key the protected copy was made with.
        config (`PosCUDAConfig`, *optional*): the protection's parameters (default ``PosCUDAConfig()``).
        audio_column (`str`, defaults to `"audio"`): the probe's ``Audio`` column.
        label_column (`str`, *optional*, defaults to `"label"`): the probe's labels; ``None`` for unlabelled audio.
        label_names (`Sequence[str]`, *optional*): class names in the protected copy's index order (default: the
            probe's ``ClassLabel`` names, or string labels' sorted values).
        num_classes (`int`, *optional*): classes of the protected copy (needed for unlabelled probes and integer
            labels without names).
        classes (`Sequence[int]`, *optional*): the class indices the model can answer (default: all). Stamps are
            drawn from them; the test relabels them.
        num_decoys (`int`, defaults to `19`): public decoy keys queried as well (each costs ``max_queries`` more
            queries); they give the rates context and lower the smallest possible p-value ``1 / ((1 + num_decoys)
            * C!)``. ``0`` is enough for 10 classes (2.8e-7).
        max_queries (`int`, defaults to `300`): queries per key; probe clips are reused (with other stamps) when the
            probe is smaller.
        seed (`int`, defaults to `0`): the audit's design randomness (which clips, which stamps).
        alpha (`float`, defaults to `1e-4`): the verdict's threshold on the p-value.
        use_scores (`bool`, defaults to `True`): when ``predict`` returns scores, use them (a stronger test);
            otherwise or when it returns labels, the top-1 answers.
        sampling_rate (`int`, *optional*): the rate ``predict`` expects: stamped clips are resampled to it (the stamp
            is applied at the probe's own rate, as protection would). Default: the probe's rate.
        batch_size (`int`, defaults to `32`): clips per ``predict`` call.
        progress (`bool`, defaults to `True`): a progress bar over the queries.
        stamp_cache (`dict`, *optional*): pass the same dict to audits of several models with the same probe, keys,
            seed and parameters, and each key's stamped queries are computed once (kept in it, in memory).

    Returns:
        `AuditResult`: verdict, p-value, rates, counts and the public key id.

    Raises:
        ValueError: a probe without audio or labels, fewer than 2 classes, a design whose smallest p-value is above
            ``alpha`` (more decoys needed), or a predictor that returns something else than asked. Every input
            check happens before the first query.

    Example:

    ```py
    >>> import numpy as np
    >>> from hf_poscuda import PosCUDAKey
    >>> from hf_poscuda.audit import audit_model
    >>> from hf_poscuda.sources import load_fsdd_mini
    >>> probe = load_fsdd_mini()["test"]
    >>> always_zero = lambda clips, sr: np.zeros(len(clips), dtype=int)   # a model that learned nothing
    >>> result = audit_model(always_zero, probe, PosCUDAKey(bytes(range(32))), num_decoys=0, max_queries=50,
    ...                      progress=False)
    >>> result.trained_on_key, result.queries
    (False, 50)

    ```
    """
    from tqdm.auto import tqdm

    if not callable(predict):
        raise ValueError(f"predict must be callable (clips, sampling_rate) -> class indices, got {type(predict).__name__}.")
    if not isinstance(key, PosCUDAKey):
        raise ValueError(f"key must be a PosCUDAKey (PosCUDAKey.load(path)), got {type(key).__name__}.")
    _check_inputs(probe, audio_column, num_decoys, max_queries, alpha, batch_size)
    config = config or PosCUDAConfig()
    labels, count = _labels_of(probe, label_column, label_names, num_classes)
    audited = sorted(set(int(c) for c in classes)) if classes is not None else list(range(count))
    if any(not 0 <= c < count for c in audited):
        raise ValueError(f"classes must be class indices in [0, {count}), got {list(classes or [])}.")
    if len(audited) < 2:
        raise ValueError(f"The audit needs at least 2 classes the model can answer; got {len(audited)}. Check the "
                         "label mapping between the model and the probe.")
    c = len(audited)
    floor = p_floor(c, num_decoys)
    if floor > alpha:
        needed = math.ceil(1.0 / (alpha * math.factorial(c))) - 1 if c <= EXACT_MAX_CLASSES else 0
        raise ValueError(
            f"With {c} classes and {num_decoys} decoy keys the smallest possible p-value is {floor:.2g}, above "
            f"alpha={alpha:g}: the audit could never find evidence. Use at least {needed} decoys (num_decoys / "
            "--decoys) or a larger alpha."
        )
    position = {cls: i for i, cls in enumerate(audited)}

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(probe))
    rows = order[np.arange(max_queries) % len(probe)]
    targets = rng.integers(0, c, size=max_queries)  # positions in `audited`, uniform over the audited classes
    own = np.array([position.get(labels[r], -1) for r in rows] if labels is not None else [-1] * max_queries)
    clips, probe_rate = _read_mono(probe, rows, audio_column)
    model_rate = sampling_rate or probe_rate
    keys = [key, *(decoy_key(i).decoy_of(key) for i in range(num_decoys))]
    matrices, key_answers, rates = [], None, []
    bar = tqdm(total=max_queries * len(keys), desc="audit queries", unit="query", disable=not progress)
    used_scores = False
    design = (getattr(probe, "_fingerprint", id(probe)), config, seed, max_queries, tuple(audited), model_rate)
    for k_index, k in enumerate(keys):
        cache_key = (k.key_id, k.design.design_id if k.design is not None else None, *design)
        stamped = stamp_cache.get(cache_key) if stamp_cache is not None else None
        if stamped is None:
            transform = PosCUDATransform(k, config)
            stamped = []
            for start in range(0, max_queries, batch_size):
                stop = min(start + batch_size, max_queries)
                stamped += stamp(transform, [clips[r] for r in rows[start:stop]],
                                 [audited[t] for t in targets[start:stop]], probe_rate)
            if model_rate != probe_rate:
                stamped = [change_rate(x, probe_rate, model_rate).astype(np.float32) for x in stamped]
            if stamp_cache is not None:
                stamp_cache[cache_key] = stamped
        answers = np.empty(max_queries, dtype=np.int64)
        scores: np.ndarray | None = None
        for start in range(0, max_queries, batch_size):
            stop = min(start + batch_size, max_queries)
            batch = [x.copy() for x in stamped[start:stop]]  # a predictor may change its input in place
            top, s = _answers(predict(batch, model_rate), stop - start, count)
            answers[start:stop] = [position.get(int(a), -1) for a in top]
            if s is not None and use_scores:
                scores = np.zeros((max_queries, c)) if scores is None else scores
                scores[start:stop] = s[:, audited]
            bar.update(stop - start)
        used_scores = scores is not None and (k_index == 0 or used_scores)
        matrices.append(statistic_matrix(targets, own, answers, scores if used_scores else None, c))
        wrong = targets != own
        rates.append(float(((answers == targets) & wrong).sum() / max(1, wrong.sum())))
        if k_index == 0:
            key_answers = answers
    bar.close()
    p_value, exact = relabelling_p_value(matrices[0], matrices[1:], seed=seed)
    wrong_count = int((targets != own).sum())
    chance = 1.0 / c
    spread = math.sqrt(chance * (1 - chance) / max(1, wrong_count))
    if num_decoys:
        spread = max(spread, float(np.std(rates[1:])))
    z = (rates[0] - (float(np.mean(rates[1:])) if num_decoys else chance)) / spread
    assert key_answers is not None
    result = AuditResult(
        key_id=key.key_id, trained_on_key=bool(p_value <= alpha), p_value=float(p_value), alpha=alpha,
        p_floor=floor, z=float(z), key_rate=rates[0], decoy_rates=rates[1:],
        hits=int(((key_answers == targets) & (targets != own)).sum()), wrong_class_queries=wrong_count,
        queries=max_queries, total_queries=max_queries * len(keys), classes=c, decoys=num_decoys,
        used_scores=used_scores, exact=exact, audited_classes=audited, targets=[audited[t] for t in targets],
        answers=[audited[a] if a >= 0 else -1 for a in key_answers],
        own_classes=[audited[o] if o >= 0 else -1 for o in own],
    )
    logger.info("%s", result.format())
    return result


def queries_needed(result: AuditResult, alpha: float = 1e-6, step: int = 10) -> int | None:
    """The fewest queries (a multiple of ``step``, key only, top-1 answers) after which the relabelling p-value of
    ``result``'s own queries is at most ``alpha``; ``None`` if it never is. Every prefix of the queries is itself
    a valid audit design (the clips and stamps are drawn in random order)."""
    position = {cls: i for i, cls in enumerate(result.audited_classes)}
    c = len(position)
    t = np.array([position[x] for x in result.targets])
    a = np.array([position.get(x, -1) for x in result.answers])
    o = np.array([position.get(x, -1) for x in result.own_classes])
    if p_floor(c, 0) > alpha:
        return None
    for n in range(step, len(t) + 1, step):
        p, _ = relabelling_p_value(statistic_matrix(t[:n], o[:n], a[:n], None, c))
        if p <= alpha:
            return n
    return None


# ------------------------------------------------------------------------------------------- checkpoints
def parse_label_map(text: str | None) -> dict[str, str] | None:
    """``--label-map``: a JSON object mapping the model's label names to the probe's class names."""
    import json

    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f'--label-map must be a JSON object like {{"yes": "1", "no": "0"}}: {err.msg}.') from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError('--label-map must be a JSON object of model label name -> probe class name (strings).')
    return value


@dataclass
class CheckpointModel:
    """A ``transformers`` audio-classification checkpoint wrapped for :func:`audit_model`.

    Build it with :func:`load_checkpoint`. ``predict`` answers in the probe's class indices; ``classes`` are the
    probe classes the model can answer (matched by name); ``sampling_rate`` is what its feature extractor expects.
    """

    pipeline: Any
    sampling_rate: int
    classes: list[int]
    model_to_probe: dict[str, int]
    num_probe_classes: int
    batch_size: int = 32
    scores: bool = True

    def __call__(self, clips: list[np.ndarray], sampling_rate: int) -> np.ndarray:
        if sampling_rate != self.sampling_rate:
            raise ValueError(f"The model expects {self.sampling_rate} Hz audio, got {sampling_rate} Hz (pass "
                             "sampling_rate=model.sampling_rate to audit_model).")
        inputs = [{"raw": np.asarray(c, dtype=np.float32), "sampling_rate": sampling_rate} for c in clips]
        outputs = self.pipeline(inputs, top_k=len(self.pipeline.model.config.id2label), batch_size=self.batch_size)
        if self.scores:
            out = np.zeros((len(clips), self.num_probe_classes))
            for i, ranked in enumerate(outputs):
                for item in ranked:
                    index = self.model_to_probe.get(item["label"])
                    if index is not None:
                        out[i, index] = max(out[i, index], float(item["score"]))
            return out
        return np.array([self.model_to_probe.get(ranked[0]["label"], -1) for ranked in outputs], dtype=np.int64)


def load_checkpoint(
    model: str, probe_label_names: Sequence[str], *, label_map: dict[str, str] | None = None,
    device: str | None = None, batch_size: int = 32, scores: bool = True,
) -> CheckpointModel:
    """Load a local or Hub ``transformers`` audio-classification checkpoint through ``pipeline("audio-classification")``
    and match its labels to the probe's classes by name (or through ``label_map``).

    Raises:
        ValueError: not an audio classifier, or fewer than 2 classes shared with the probe (the message lists both
            label sets), or a ``label_map`` naming labels that do not exist.
        ImportError: ``transformers`` is not installed.
    """
    try:
        import transformers
        from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES
    except ImportError as err:
        raise ImportError("Auditing a checkpoint needs transformers: pip install 'hf-poscuda[eval]'.") from err
    try:
        config = transformers.AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise ValueError(f"Could not load a transformers checkpoint from {model!r}: {str(err).splitlines()[0]}") from None
    if config.model_type not in MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES:
        raise ValueError(
            f"{model!r} is a {config.model_type!r} model, not an audio classifier (transformers' "
            "audio-classification models: wav2vec2, hubert, ast, whisper, ...). The audit asks an audio classifier "
            "for its answers."
        )
    names = {str(v): int(k) for k, v in config.id2label.items()}
    probe_index = {name: i for i, name in enumerate(probe_label_names)}
    if label_map is not None:
        unknown = sorted(set(label_map) - set(names))
        missing = sorted(set(label_map.values()) - set(probe_index))
        if unknown or missing:
            raise ValueError(f"--label-map names model labels {unknown} that the model does not have or probe classes "
                             f"{missing} that the probe does not have. Model labels: {sorted(names)}; probe classes: "
                             f"{list(probe_label_names)}.")
    model_to_probe = {}
    for name in names:
        target = label_map.get(name) if label_map is not None else name
        if target in probe_index:
            model_to_probe[name] = probe_index[target]
    classes = sorted(set(model_to_probe.values()))
    if len(classes) < 2:
        raise ValueError(
            f"The model and the probe share {len(classes)} class(es) by name; the audit needs at least 2. Model labels: "
            f"{sorted(names)[:20]}; probe classes: {list(probe_label_names)[:20]}. Map them with --label-map "
            "'{\"model label\": \"probe class\", ...}'."
        )
    pipe = transformers.pipeline("audio-classification", model=model, device=device)
    rate = int(getattr(pipe.feature_extractor, "sampling_rate", 16000))
    return CheckpointModel(pipe, rate, classes, model_to_probe, len(probe_label_names), batch_size, scores)


def load_probe(source: str, split: str | None = None, *, audio_column: str = "audio",
               label_column: str = "label", max_rows: int | None = None) -> Any:
    """The probe split of ``source``, checked for its audio and label columns before anything is queried.

    A local folder is read memory-mapped (:func:`hf_poscuda.sources.load_audio_dataset`); a Hub dataset is sampled
    without downloading the rest (:func:`hf_poscuda.verify.sample_rows`, at most ``max_rows`` rows; needs ``split``).
    """
    from datasets import Audio, DatasetDict

    from .sources import load_audio_dataset
    from .verify import is_hub_source, sample_rows

    if is_hub_source(source) and max_rows is not None:
        if split is None:
            raise ValueError(f"Choose the probe split of {source!r} with --split NAME (your held-back clean split).")
        loaded = sample_rows(source, split, max_rows, columns=[audio_column, label_column])
    else:
        loaded = load_audio_dataset(source, split)
    if isinstance(loaded, DatasetDict):
        if len(loaded) != 1:
            raise ValueError(f"{source!r} has splits {list(loaded)}; choose the probe with --split NAME (your held-back "
                             "clean split, e.g. test).")
        loaded = next(iter(loaded.values()))
    features = loaded.features
    if audio_column not in features or not isinstance(features[audio_column], Audio):
        raise ValueError(f"The probe {source!r} has no Audio column {audio_column!r} (columns: {list(features)}); pass "
                         "--audio-column NAME.")
    if label_column not in features:
        raise ValueError(f"The probe {source!r} has no label column {label_column!r} (columns: {list(features)}); the "
                         "CLI audit needs labelled clean clips (pass --label-column NAME).")
    return loaded


def audit_checkpoint(
    model: str,
    probe: str,
    key: PosCUDAKey,
    *,
    split: str | None = None,
    label_map: dict[str, str] | None = None,
    config: PosCUDAConfig | None = None,
    audio_column: str = "audio",
    label_column: str = "label",
    device: str | None = None,
    scores: bool = True,
    **kwargs: Any,
) -> AuditResult:
    """Audit a ``transformers`` audio-classification checkpoint (local folder or Hub id) with a probe source: what
    ``hf-poscuda audit`` runs. ``kwargs`` go to :func:`audit_model` (``num_decoys``, ``max_queries``, ``seed``,
    ``alpha``, ``progress``)."""
    from .labels import dataset_label_names

    data = load_probe(probe, split, audio_column=audio_column, label_column=label_column,
                      max_rows=kwargs.get("max_queries", 300))
    names = dataset_label_names(data, label_column)
    if names is None:
        raise ValueError(f"The probe's labels ({data.features[label_column]}) have no names to match the model's "
                         "labels with; use a ClassLabel or string label column.")
    checkpoint = load_checkpoint(model, names, label_map=label_map, device=device, scores=scores)
    return audit_model(checkpoint, data, key, config=config, audio_column=audio_column, label_column=label_column,
                       label_names=names, classes=checkpoint.classes, sampling_rate=checkpoint.sampling_rate,
                       use_scores=scores, **kwargs)
