"""Multinomial logistic regression on frozen features (SPEC.md §6), written on torch (CPU or GPU).

The released ``dinov2/eval/log_regression.py`` uses cuML's ``LogisticRegression(penalty="l2", C,
max_iter=1000, tol=1e-12, linesearch_max_iter=50)`` on float64 features, which minimises (like
scikit-learn's ``LogisticRegression(C)``, up to the factor n)

    mean_i CE(W x_i + b, y_i) + ||W||^2 / (2 C n)        (intercept not penalised)

with a softmax over the K classes present in the training labels (K > 2), or a sigmoid with one
weight vector for two classes. :class:`LogisticRegression` solves the same problem with
``torch.optim.LBFGS`` (strong-Wolfe line search) on analytic, chunked full-batch gradients, so it
runs wherever the features are and needs neither cuML nor scikit-learn.

Protocol (released): C is swept over ``10 ** linspace(-6, 5, 45)``; each C is trained on the train
features and scored on a fine-tune set: a given one, or the validation set (``finetune_on_val``), or a
random 10 % hold-out of train (``torch.manual_seed(0); randperm``). C is chosen on top-1 of the metric
(mean per-class accuracy when per-class accuracy is asked), the first C wins ties. The final model is
refit on train + fine-tune set (train only with ``finetune_on_val``) and evaluated on validation.
No feature normalisation. Deviation: the sweep warm-starts each C from the previous solution (same
optimum, far fewer iterations); with several ranks each rank sweeps a contiguous block of C values.

The command line and the model-level entry point live in :mod:`dinov2.eval.log_regression.cli`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from dinov2 import distributed
from dinov2.eval.metrics import MetricType, build_metric
from dinov2.eval.results import format_table

logger = logging.getLogger("dinov2")

__all__ = [
    "DEFAULT_MAX_ITER",
    "DEFAULT_TOL",
    "C_POWER_RANGE",
    "default_c_values",
    "check_fit_device",
    "check_hold_out",
    "LogisticRegression",
    "holdout_split",
    "sweep_c_values",
    "eval_log_regression",
    "format_log_regression_results",
]

DEFAULT_MAX_ITER = 1_000
DEFAULT_TOL = 1e-12
C_POWER_RANGE = torch.linspace(-6, 5, 45)
DEFAULT_CHUNK_ROWS = 65_536  # rows per block of the loss / gradient pass (bounds the [rows, K] buffers)


def check_fit_device(device: torch.device | str, flag: str = "--train-features-device") -> torch.device:
    """``device`` for the fits, checked when a run starts (before any feature is extracted): a CUDA device on a
    process that has none is an error naming ``flag``. Not at flag-check time: a SLURM submission is checked on a
    login node that may have no GPU while its job's nodes do."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{flag} {device} but this process sees no CUDA device: pass {flag} cpu, or run on a GPU")
    return device


def default_c_values() -> list[float]:
    """The released sweep: ``10 ** linspace(-6, 5, 45)`` computed in float32 as released."""
    return (10**C_POWER_RANGE).tolist()


class LogisticRegression:
    """L2-regularised multinomial (or binary) logistic regression; float64 by default, device follows input.

    After :meth:`fit`: ``coef_`` [K', D] and ``intercept_`` [K'] (K' = 1 for two classes, as in
    scikit-learn), ``classes_`` [K] (sorted labels seen in training), ``n_iter_``.
    """

    def __init__(
        self,
        C: float,
        *,
        max_iter: int = DEFAULT_MAX_ITER,
        tol: float = DEFAULT_TOL,
        history_size: int = 10,
        dtype: torch.dtype = torch.float64,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ):
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.C, self.max_iter, self.tol = float(C), int(max_iter), float(tol)
        self.history_size, self.dtype, self.chunk_rows = history_size, dtype, chunk_rows

    def _logits(self, x: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor) -> torch.Tensor:
        logits = x @ coef.T + intercept  # [m, K']
        if coef.shape[0] == 1:  # binary: softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        return logits  # [m, K]

    def _loss_and_grad(self, x, y, coef, intercept):
        """Objective (mean CE + ||W||^2 / (2 C n)) and its gradients, accumulated over row blocks."""
        n = x.shape[0]
        loss = x.new_zeros(())
        grad_coef, grad_intercept = torch.zeros_like(coef), torch.zeros_like(intercept)
        for start in range(0, n, self.chunk_rows):
            xb, yb = x[start : start + self.chunk_rows], y[start : start + self.chunk_rows]  # [m, D], [m]
            log_probs = torch.log_softmax(self._logits(xb, coef, intercept), dim=1)  # [m, K]
            loss -= log_probs.gather(1, yb[:, None]).sum()
            dlogits = log_probs.exp()
            dlogits[torch.arange(len(yb), device=yb.device), yb] -= 1.0
            if coef.shape[0] == 1:
                dlogits = dlogits[:, 1:]
            grad_coef += dlogits.T @ xb
            grad_intercept += dlogits.sum(dim=0)
        penalty = 1.0 / (self.C * n)
        loss = loss / n + 0.5 * penalty * coef.pow(2).sum()
        return loss, grad_coef / n + penalty * coef, grad_intercept / n

    def fit(self, features: torch.Tensor, labels: torch.Tensor, init: LogisticRegression | None = None):
        """features [n, D], labels [n] class indices; ``init``: a fitted model to warm-start from."""
        x = features.to(self.dtype)
        labels = labels.to(x.device).long()
        if labels.numel() == 0 or bool((labels < 0).any()):
            raise ValueError(
                "logistic regression needs labelled features (labels missing or < 0); use a labelled split"
            )
        self.classes_ = torch.unique(labels)
        if len(self.classes_) < 2:
            raise ValueError(f"logistic regression needs at least 2 classes, got {self.classes_.tolist()}")
        y = torch.searchsorted(self.classes_, labels)  # class indices among the classes present
        k = 1 if len(self.classes_) == 2 else len(self.classes_)
        if init is not None and torch.equal(init.classes_.cpu(), self.classes_.cpu()):
            coef, intercept = init.coef_.to(x).clone(), init.intercept_.to(x).clone()
        else:
            coef, intercept = x.new_zeros(k, x.shape[1]), x.new_zeros(k)
        optimizer = torch.optim.LBFGS(
            [coef, intercept],
            lr=1,
            max_iter=self.max_iter,
            max_eval=self.max_iter * 50,
            tolerance_grad=self.tol,
            tolerance_change=self.tol * 0.01,  # cuML's default delta
            history_size=self.history_size,
            line_search_fn="strong_wolfe",
        )

        def closure():
            loss, coef.grad, intercept.grad = self._loss_and_grad(x, y, coef, intercept)
            return loss

        optimizer.step(closure)
        self.coef_, self.intercept_ = coef, intercept
        self.n_iter_ = optimizer.state[optimizer._params[0]].get("n_iter", 0)
        return self

    @torch.no_grad()
    def predict_proba(self, features: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
        """Probabilities [n, num_classes] (columns of classes unseen in training are 0); default K columns."""
        x = features.to(device=self.coef_.device, dtype=self.dtype)
        probs = torch.softmax(self._logits(x, self.coef_, self.intercept_), dim=1)  # [n, K]
        if num_classes is None:
            return probs
        out = probs.new_zeros(len(x), num_classes)
        out[:, self.classes_] = probs
        return out


def holdout_split(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Released hold-out: ``randperm(n)`` of a CPU generator seeded ``seed`` (= ``torch.manual_seed(0)``);
    the first ``n // 10`` indices are held out. Returns (train_index, holdout_index)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n // 10 :], perm[: n // 10]


def check_hold_out(n_train: int, what: str, fix: str) -> None:
    """Refuse a train set of ``n_train`` ``what`` (e.g. "training images") too small for the released 10 % hold-out
    that chooses C (:func:`holdout_split`: ``n // 10`` samples), naming ``fix`` (how the caller chooses C otherwise).
    Callers check it before any feature is extracted."""
    if n_train // 10 == 0:
        raise ValueError(f"{n_train} {what} leave no 10 % hold-out to choose C (it needs at least 10); {fix}")


def _score(model, features, labels, metric_type, num_classes) -> dict[str, torch.Tensor]:
    """Metric of a fitted model on features every rank holds in full (no cross-rank reduction)."""
    metric = build_metric(metric_type, num_classes=num_classes, sync=False)
    for start in range(0, len(features), DEFAULT_CHUNK_ROWS):
        block = slice(start, start + DEFAULT_CHUNK_ROWS)
        probs = model.predict_proba(features[block], num_classes=num_classes)
        metric.update(probs, labels[block].to(probs.device))
    return metric.compute()


def sweep_c_values(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    eval_features: torch.Tensor,
    eval_labels: torch.Tensor,
    *,
    num_classes: int,
    metric_type: MetricType | str = MetricType.MEAN_ACCURACY,
    c_values: Sequence[float] | None = None,
    **model_kwargs,
) -> dict:
    """Fit one model per C on train and score it on the eval (fine-tune) set; pick the best C.

    Collective with a process group: each rank fits a contiguous block of C values (warm-starting
    along the block) and the scores are summed over ranks. Selection uses top-1 of ``metric_type``
    (mean per-class accuracy when it is per-class accuracy); the first (smallest) C wins ties.
    Returns ``{"best_C": float, "sweep": [{"C": c, "top-1": %, "top-5": %}, ...]}``.
    """
    metric_type = MetricType(metric_type)
    if metric_type is MetricType.PER_CLASS_ACCURACY:
        metric_type = MetricType.MEAN_PER_CLASS_ACCURACY
    c_values = list(default_c_values() if c_values is None else c_values)
    world, rank = distributed.get_global_size(), distributed.get_global_rank()
    mine = torch.tensor_split(torch.arange(len(c_values)), world)[rank].tolist()
    scores = torch.zeros(len(c_values), 2, dtype=torch.float64, device=train_features.device)  # top-1, top-5
    previous = None
    for i in mine:
        model = LogisticRegression(c_values[i], **model_kwargs).fit(train_features, train_labels, init=previous)
        result = _score(model, eval_features, eval_labels, metric_type, num_classes)
        scores[i] = torch.stack([result["top-1"], result.get("top-5", result["top-1"])]).to(scores)
        logger.info("C = %.6g: %d iterations, top-1 %.4f", c_values[i], model.n_iter_, result["top-1"])
        previous = model
    distributed.all_reduce(scores)
    best = int(torch.argmax(scores[:, 0]))  # first maximum
    sweep = [{"C": c, "top-1": 100.0 * s[0], "top-5": 100.0 * s[1]} for c, s in zip(c_values, scores.tolist())]
    logger.info("Sweep best top-1 %.2f, best C = %.6f", sweep[best]["top-1"], c_values[best])
    return {"best_C": c_values[best], "sweep": sweep}


def _check_features(features, labels, what):
    if features is None or labels is None or labels.numel() == 0:
        raise ValueError(f"{what} features/labels are missing; logistic regression needs a labelled {what} split")
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"{what} features must be [N, D] with labels [N], got {tuple(features.shape)}, {tuple(labels.shape)}"
        )
    if bool((labels < 0).any()):
        raise ValueError(f"{what} labels contain {labels.min().item()}: the split has no labels; use a labelled split")


def eval_log_regression(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    finetune_features: torch.Tensor | None = None,
    finetune_labels: torch.Tensor | None = None,
    finetune_on_val: bool = False,
    metric_type: MetricType | str = MetricType.MEAN_ACCURACY,
    c_values: Sequence[float] | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    holdout_seed: int = 0,
) -> dict:
    """Released protocol on features every rank holds in full (collective when distributed).

    C chosen on ``finetune_*`` when given, else on val (``finetune_on_val``), else on a 10 % hold-out
    of train; refit on train + fine-tune set (train only with ``finetune_on_val``); scored on val.
    ``device`` / ``dtype``: where and how the models are fitted (default: float64 where the train
    features are). Returns ``{"top-1": %, "top-5": %, "best_C": C, "sweep": [...]}`` (with
    per-class accuracy, "top-1" / "top-5" are per-class lists).
    """
    _check_features(train_features, train_labels, "train")
    _check_features(val_features, val_labels, "val")
    device = train_features.device if device is None else torch.device(device)
    train_x, train_y = train_features.to(device=device, dtype=dtype), train_labels.to(device)
    if finetune_features is not None:
        _check_features(finetune_features, finetune_labels, "fine-tune")
        logger.info("Choosing C on the fine-tune dataset")
        tune_x, tune_y = finetune_features.to(device=device, dtype=dtype), finetune_labels.to(device)
    elif finetune_on_val:
        logger.info("Choosing C on the validation dataset")
        tune_x, tune_y = val_features.to(device=device, dtype=dtype), val_labels.to(device)
    else:
        logger.info("Choosing C on 10%% of the train dataset")
        check_hold_out(len(train_x), "training samples", "choose C on val (finetune_on_val=True) or on a fine-tune set")
        keep, held = (index.to(device) for index in holdout_split(len(train_x), seed=holdout_seed))
        tune_x, tune_y, train_x, train_y = train_x[held], train_y[held], train_x[keep], train_y[keep]
    num_classes = int(max(train_y.max(), tune_y.max())) + 1
    model_kwargs = dict(max_iter=max_iter, dtype=dtype)
    sweep = sweep_c_values(
        train_x,
        train_y,
        tune_x,
        tune_y,
        num_classes=num_classes,
        metric_type=metric_type,
        c_values=c_values,
        **model_kwargs,
    )
    if not finetune_on_val:  # released rule (also with a fine-tune set and finetune_on_val)
        train_x, train_y = torch.cat([train_x, tune_x]), torch.cat([train_y, tune_y])
    model = LogisticRegression(sweep["best_C"], **model_kwargs).fit(train_x, train_y)
    result = _score(model, val_features.to(device), val_labels.to(device), metric_type, num_classes)
    return {
        "top-1": 100.0 * result["top-1"],
        "top-5": 100.0 * result.get("top-5", torch.tensor(0.0)),
        "best_C": sweep["best_C"],
        "sweep": sweep["sweep"],
    }


def format_log_regression_results(results: dict) -> str:
    """Readable table of the C sweep (fine-tune-set accuracy) and the final validation accuracy."""
    rows = [{"C": f"{entry['C']:.3g}", "top-1": entry["top-1"], "top-5": entry["top-5"]} for entry in results["sweep"]]
    table = format_table(rows, title="Logistic regression: C sweep (fine-tune set accuracy, %)")
    top1, top5 = (float(results[k].nanmean()) for k in ("top-1", "top-5"))
    return f"{table}\n\nbest C = {results['best_C']:.6g}: validation top-1 {top1:.2f}, top-5 {top5:.2f}"
