"""Pretrain a wav2vec2 / AST checkpoint on a speech corpus and save it as a user would find one on the Hub.

The fine-tuning threat (an adversary who fine-tunes a pretrained speech model on the protected copy) needs
pretrained checkpoints, and none can be downloaded here. :func:`pretrain_checkpoint` trains a model from scratch
on word classification (supervised pretraining) over a corpus that is not the evaluation data (see
:mod:`hf_poscuda.evaluation.corpus`), then writes it with ``save_pretrained`` together with its feature
extractor and a ``pretraining.json`` record. The evaluation loads the folder exactly as it loads a Hub id:
``ModelSpec("wav2vec2", checkpoint=folder)``, and the head is replaced for the new labels.

Example:

```py
>>> import numpy as np, tempfile
>>> from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features
>>> from hf_poscuda.evaluation import TrainingRecipe
>>> from hf_poscuda.evaluation.pretrain import pretrain_checkpoint
>>> rng = np.random.default_rng(0)
>>> features = Features({"audio": Audio(sampling_rate=8000), "label": ClassLabel(names=["a", "b"])})
>>> split = lambda n: Dataset.from_dict({"audio": [{"array": rng.normal(0, .1, 4000), "sampling_rate": 8000}
...                                      for _ in range(n)], "label": [i % 2 for i in range(n)]}, features=features)
>>> corpus = DatasetDict(train=split(8), test=split(4))
>>> folder = tempfile.mkdtemp()
>>> record = pretrain_checkpoint("ast", corpus, folder, preset="tiny",
...                              recipe=TrainingRecipe(hf_epochs=1, batch_size=4, clip_seconds=0.5))
>>> sorted(record["pretraining"]), record["model"]
(['seconds', 'test_accuracy', 'train_accuracy'], 'ast')

```
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .._version import __version__
from .experiment import to_arrays
from .models import HF_MODELS, build_hf_model
from .training import TrainingRecipe, train_hf

logger = logging.getLogger(__name__)

RECORD_NAME = "pretraining.json"


def pretrain_checkpoint(
    name: str,
    corpus: Any,
    output_dir: str | Path,
    *,
    preset: str = "small",
    recipe: TrainingRecipe | None = None,
    corpus_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``name`` (``"wav2vec2"`` or ``"ast"``) from scratch on ``corpus`` and save it to ``output_dir``.

    Args:
        name (`str`): the architecture.
        corpus (`DatasetDict`): ``train`` and ``test`` splits with ``audio`` and a ``ClassLabel`` ``label``.
        output_dir (`str` or `Path`): where ``save_pretrained`` writes the model, the feature extractor and
            ``pretraining.json``. It must not hold a checkpoint already.
        preset (`str`, defaults to `"small"`): the size (:data:`~hf_poscuda.evaluation.models.HF_PRESETS`).
        recipe (`TrainingRecipe`, *optional*): ``hf_epochs``, ``hf_learning_rate``, ``batch_size``,
            ``clip_seconds`` and ``seed`` are used.
        corpus_info (`dict`, *optional*): how the corpus was made, copied into the record.

    Returns:
        `dict`: the record written to ``pretraining.json`` (architecture, preset, recipe, corpus, accuracies).
    """
    if name not in HF_MODELS:
        raise ValueError(f"Unknown transformer model {name!r}; choose one of {list(HF_MODELS)}.")
    for split in ("train", "test"):
        if split not in corpus:
            raise ValueError(f"The corpus needs a {split!r} split, found {sorted(corpus)}.")
    out = Path(output_dir)
    if (out / "config.json").exists():
        raise FileExistsError(f"{out} already holds a checkpoint; choose an empty folder or delete it first.")
    recipe = recipe or TrainingRecipe()
    names = corpus["train"].features["label"].names
    train = to_arrays(corpus["train"], recipe.clip_seconds)
    test = to_arrays(corpus["test"], recipe.clip_seconds)
    import torch

    torch.manual_seed(recipe.seed)
    model, extractor = build_hf_model(
        name, len(names), train.sampling_rate, preset=preset, max_seconds=recipe.clip_seconds
    )
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {w: i for i, w in enumerate(names)}
    start = time.perf_counter()
    result = train_hf(model, extractor, (train.audio, train.labels), (test.audio, test.labels), train.sampling_rate,
                      recipe, desc=f"pretrain {name}-{preset}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    extractor.save_pretrained(out)
    record = {
        "model": name, "preset": preset, "hf_poscuda_version": __version__, "sampling_rate": train.sampling_rate,
        "classes": len(names), "train_clips": len(train.labels), "test_clips": len(test.labels),
        "recipe": recipe.to_dict(), "corpus": corpus_info or {},
        "pretraining": {"test_accuracy": round(result.test_accuracy, 4),
                        "train_accuracy": round(result.train_accuracy, 4),
                        "seconds": round(time.perf_counter() - start, 1)},
    }
    (out / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    logger.info("Pretrained %s-%s: test accuracy %.3f, saved to %s", name, preset, result.test_accuracy, out)
    return record
