"""Audit the evaluation's own trained models: wrap a trained CNN or transformers model as an
:func:`hf_poscuda.audit.audit_model` predictor, with the adversary's input pipeline in front of it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .attacks import Attack
from .training import TrainResult, extract_features


def model_predictor(
    trained: TrainResult, sampling_rate: int, clip_seconds: float = 1.0, *, preprocess: Attack | None = None,
    seed: int = 0, batch_size: int = 64,
) -> Any:
    """A ``predict(clips, sampling_rate) -> scores`` callable for a model :func:`~hf_poscuda.evaluation.experiment.train_model`
    trained (``trained.model``): clips are cut or zero-padded to ``clip_seconds`` as in training, passed through
    ``preprocess`` (the preprocessing parts of a countermeasure: what the adversary's pipeline does to every input,
    e.g. blind equalisation), and scored; the model's logits come back (``[clips, classes]``).
    """
    if trained.model is None:
        raise ValueError("This TrainResult holds no model (it was read back from a record, not trained here).")
    model, inner = trained.model, None
    if not isinstance(model, torch.nn.Module):  # a trained adversary that is its own predictor (GE2E heads)
        model, inner = None, trained.model
    is_hf = trained.extractor is not None
    n = int(round(clip_seconds * sampling_rate))
    rng = np.random.default_rng(seed)

    def predict(clips: list[np.ndarray], sr: int) -> np.ndarray:
        if sr != sampling_rate:
            raise ValueError(f"The model was trained at {sampling_rate} Hz, got {sr} Hz.")
        x = np.zeros((len(clips), n), dtype=np.float32)
        for i, c in enumerate(clips):
            x[i, : min(n, len(c))] = c[:n]
        if preprocess is not None:
            for part in preprocess.parts:
                if part.kind == "preprocess":
                    x = part.apply(x, sr, rng).astype(np.float32)
        if inner is not None:
            return np.asarray(inner(list(x), sr), dtype=np.float64)
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                chunk = x[i : i + batch_size]
                if is_hf:
                    inputs = {k: torch.from_numpy(v) for k, v in extract_features(trained.extractor, chunk, sr).items()}
                    out.append(model(**inputs).logits.double().numpy())
                else:
                    out.append(model(torch.from_numpy(chunk)).double().numpy())
        return np.concatenate(out)

    return predict


__all__ = ["model_predictor"]
