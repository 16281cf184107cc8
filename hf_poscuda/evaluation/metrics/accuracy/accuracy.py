"""Accuracy as an `evaluate` metric module, shipped with hf-poscuda so that no Hub access is needed.

Same inputs and output as the Hub's ``evaluate-metric/accuracy`` (``predictions``, ``references``,
optional ``normalize`` and ``sample_weight``), computed with numpy instead of scikit-learn.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy: the proportion of correct predictions among all predictions."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels.
    references (`list` of `int`): ground-truth labels.
    normalize (`bool`, defaults to `True`): return the fraction (else the count) of correct predictions.
    sample_weight (`list` of `float`, *optional*): per-sample weights.
Returns:
    accuracy (`float` or `int`).
Example:
    >>> accuracy_metric = evaluate.load("path/to/accuracy")
    >>> accuracy_metric.compute(references=[0, 1, 2, 0], predictions=[0, 1, 1, 0])
    {'accuracy': 0.75}
"""
_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        p, r = np.asarray(predictions), np.asarray(references)
        w = np.ones(len(p)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        correct = float(((p == r) * w).sum())
        if normalize:
            return {"accuracy": correct / float(w.sum()) if len(p) else float("nan")}
        return {"accuracy": int(correct) if sample_weight is None else correct}
