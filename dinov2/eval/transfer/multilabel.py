"""Multi-label logistic regression (PASCAL VOC 2007): one binary classifier per class (one-vs-rest, as the
DINOv3 release does for 2-D targets) with the released solver and C sweep of :mod:`dinov2.eval.log_regression`.

One C for all classes, chosen on the val split by 11-point mAP (the first best C wins ties); then every class is
refit on train + val and scored on test. Training treats ``difficult`` images (target 0) as positives (the object
is in the image); the mAP ignores them (:mod:`dinov2.eval.transfer.metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from dinov2.eval.log_regression import DEFAULT_MAX_ITER, LogisticRegression, default_c_values
from dinov2.eval.transfer.metrics import voc07_mean_average_precision

logger = logging.getLogger("dinov2")

__all__ = ["fit_one_vs_rest", "eval_multilabel_log_regression"]


def fit_one_vs_rest(
    features: torch.Tensor, targets: np.ndarray, C: float, init: list | None = None, **model_kwargs
) -> list[LogisticRegression | None]:
    """One binary model per class of ``targets`` [N, K] (None for a class with a single value in training)."""
    models = []
    for k in range(targets.shape[1]):
        labels = torch.as_tensor(targets[:, k] >= 0, dtype=torch.long, device=features.device)
        if labels.min() == labels.max():
            models.append(None)
            continue
        previous = init[k] if init is not None else None
        models.append(LogisticRegression(C, **model_kwargs).fit(features, labels, init=previous))
    return models


def _scores(models: list, features: torch.Tensor) -> np.ndarray:
    """Positive-class probabilities [N, K] (0 for a class without a model)."""
    columns = [
        torch.zeros(len(features)) if m is None else m.predict_proba(features, num_classes=2)[:, 1].cpu()
        for m in models
    ]
    return torch.stack(columns, dim=1).double().numpy()


def eval_multilabel_log_regression(
    train: tuple[torch.Tensor, np.ndarray],
    val: tuple[torch.Tensor, np.ndarray],
    test: tuple[torch.Tensor, np.ndarray],
    *,
    c_values: Sequence[float] | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> dict:
    """(features [N, D], targets [N, K] in {1, 0, -1}) of each split -> ``{"mAP": %, "AP": [% per class],
    "best_C": C, "sweep": [{"C", "mAP"}]}`` (see the module docstring)."""
    device = train[0].device if device is None else torch.device(device)
    to = lambda x: x.to(device=device, dtype=dtype)  # noqa: E731
    train_x, val_x, test_x = to(train[0]), to(val[0]), to(test[0])
    options = dict(max_iter=max_iter, dtype=dtype)
    sweep, models = [], None
    for C in list(default_c_values() if c_values is None else c_values):
        models = fit_one_vs_rest(train_x, train[1], C, init=models, **options)
        score, _ = voc07_mean_average_precision(_scores(models, val_x), val[1])
        sweep.append({"C": C, "mAP": 100.0 * score})
        logger.info("C = %.6g: val mAP %.2f", C, 100.0 * score)
    best = max(range(len(sweep)), key=lambda i: (sweep[i]["mAP"], -i))  # first maximum
    best_c = sweep[best]["C"]
    final = fit_one_vs_rest(torch.cat([train_x, val_x]), np.concatenate([train[1], val[1]]), best_c, **options)
    mean_ap, aps = voc07_mean_average_precision(_scores(final, test_x), test[1])
    return {"mAP": 100.0 * mean_ap, "AP": [100.0 * a for a in aps], "best_C": best_c, "sweep": sweep}
