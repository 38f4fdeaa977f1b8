"""Logistic regression: same optimum as scikit-learn, same C chosen, released protocol facts, sharded sweep.

Tolerances: both solvers stop with gradients ~1e-8 (float64); measured agreement is ~3e-7 on
probabilities and ~2e-6 on coefficients, so the tests allow 1e-5 on probabilities and
rtol 1e-4 / atol 1e-5 on coefficients.
"""

import pytest
import torch

from dinov2.eval.log_regression import (
    C_POWER_RANGE,
    LogisticRegression,
    default_c_values,
    format_log_regression_results,
    holdout_split,
    sweep_c_values,
)
from dinov2.eval.log_regression.solver import check_fit_device, eval_log_regression  # released name: model-level
from tests.conftest import torch_threads
from tests.dist_helpers import run_distributed

sklearn_linear_model = pytest.importorskip("sklearn.linear_model")

C_GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny float64 problems: OpenMP hand-offs dominate on a busy 2-core machine."""
    with torch_threads(1):
        yield


def make_data(n, num_classes=4, dim=8, seed=0, noise=1.5):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(42), dtype=torch.float64)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    features = centers[labels] + noise * torch.randn(n, dim, generator=g, dtype=torch.float64)
    return features.float(), labels  # float32 features, as extracted


def sklearn_fit(x, y, C):
    return sklearn_linear_model.LogisticRegression(C=C, tol=1e-12, max_iter=100_000).fit(x.double().numpy(), y.numpy())


@pytest.mark.parametrize("num_classes", [4, 2])
@pytest.mark.parametrize("C", [1e-3, 0.1, 10.0])
def test_matches_sklearn_solution(num_classes, C):
    x, y = make_data(150, num_classes=num_classes)
    ours = LogisticRegression(C).fit(x, y)
    ref = sklearn_fit(x, y, C)
    assert ours.coef_.shape == ref.coef_.shape  # [1, D] for two classes, [K, D] otherwise
    torch.testing.assert_close(ours.coef_, torch.from_numpy(ref.coef_), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.intercept_, torch.from_numpy(ref.intercept_), rtol=1e-4, atol=1e-5)
    probs = ours.predict_proba(x)
    assert probs.dtype == torch.float64
    torch.testing.assert_close(probs, torch.from_numpy(ref.predict_proba(x.double().numpy())), rtol=0, atol=1e-5)


def test_classes_absent_from_training_get_zero_probability():
    x, y = make_data(120)
    y = torch.tensor([0, 2, 3])[y % 3]  # classes {0, 2, 3}
    ours = LogisticRegression(1.0).fit(x, y)
    probs = ours.predict_proba(x, num_classes=5)
    assert probs[:, [1, 4]].abs().max() == 0
    ref = sklearn_fit(x, y, 1.0).predict_proba(x.double().numpy())
    torch.testing.assert_close(probs[:, [0, 2, 3]], torch.from_numpy(ref), rtol=0, atol=1e-5)


def test_warm_start_reaches_the_same_optimum_faster():
    x, y = make_data(150)
    cold = LogisticRegression(1.0).fit(x, y)
    warm = LogisticRegression(1.0).fit(x, y, init=LogisticRegression(0.3).fit(x, y))
    torch.testing.assert_close(warm.coef_, cold.coef_, rtol=1e-4, atol=1e-6)
    assert warm.n_iter_ < cold.n_iter_


def test_released_sweep_and_holdout_facts():
    c_values = default_c_values()
    assert len(c_values) == 45 == len(C_POWER_RANGE)
    assert c_values[0] == pytest.approx(1e-6, rel=1e-6) and c_values[-1] == pytest.approx(1e5, rel=1e-6)
    assert c_values[1] == pytest.approx(10 ** (-6 + 11 / 44), rel=1e-6)
    train_index, held = holdout_split(95)
    with torch.random.fork_rng():  # released: torch.manual_seed(0); randperm(n); first n // 10 held out
        torch.manual_seed(0)
        perm = torch.randperm(95)
    assert held.tolist() == perm[:9].tolist() and train_index.tolist() == perm[9:].tolist()


def _sklearn_sweep(train_x, train_y, tune_x, tune_y):
    accuracies = []
    for C in C_GRID:
        predictions = sklearn_fit(train_x, train_y, C).predict(tune_x.double().numpy())
        accuracies.append(100.0 * (torch.from_numpy(predictions) == tune_y).double().mean().item())
    return accuracies


def test_sweep_picks_the_same_c_as_sklearn():
    x, y = make_data(200, noise=2.5)
    tune_x, tune_y = make_data(150, noise=2.5, seed=1)
    result = sweep_c_values(x, y, tune_x, tune_y, num_classes=4, c_values=C_GRID)
    ref = _sklearn_sweep(x, y, tune_x, tune_y)
    assert [entry["top-1"] for entry in result["sweep"]] == pytest.approx(ref, abs=1e-4)
    assert len(set(ref)) > 2  # C matters on this problem
    assert result["best_C"] == C_GRID[ref.index(max(ref))]  # first C with the best accuracy


def test_protocols_against_sklearn_pipeline():
    x, y = make_data(200, noise=2.5)
    val_x, val_y = make_data(100, noise=2.5, seed=2)
    ft_x, ft_y = make_data(60, noise=2.5, seed=3)

    def final_accuracy(train_x, train_y, C):
        predictions = sklearn_fit(train_x, train_y, C).predict(val_x.double().numpy())
        return 100.0 * (torch.from_numpy(predictions) == val_y).double().mean().item()

    # default: 10 % hold-out of train chooses C, refit on all of train
    result = eval_log_regression(x, y, val_x, val_y, c_values=C_GRID)
    keep, held = holdout_split(200)
    ref = _sklearn_sweep(x[keep], y[keep], x[held], y[held])
    assert result["best_C"] == C_GRID[ref.index(max(ref))]
    refit = torch.cat([keep, held])
    assert result["top-1"].item() == pytest.approx(final_accuracy(x[refit], y[refit], result["best_C"]), abs=1e-4)
    # a fine-tune set chooses C, refit on train + fine-tune set
    result = eval_log_regression(x, y, val_x, val_y, finetune_features=ft_x, finetune_labels=ft_y, c_values=C_GRID)
    ref = _sklearn_sweep(x, y, ft_x, ft_y)
    assert result["best_C"] == C_GRID[ref.index(max(ref))]
    expected = final_accuracy(torch.cat([x, ft_x]), torch.cat([y, ft_y]), result["best_C"])
    assert result["top-1"].item() == pytest.approx(expected, abs=1e-4)
    # finetune_on_val: C chosen on val, refit on train only
    result = eval_log_regression(x, y, val_x, val_y, finetune_on_val=True, c_values=C_GRID)
    ref = _sklearn_sweep(x, y, val_x, val_y)
    assert result["best_C"] == C_GRID[ref.index(max(ref))]
    assert result["top-1"].item() == pytest.approx(max(ref), abs=1e-4)
    assert "best C" in format_log_regression_results(result)


def test_per_class_metric_and_clear_errors():
    x, y = make_data(100)
    result = eval_log_regression(x, y, x, y, c_values=[1.0], metric_type="per_class_accuracy")
    assert result["top-1"].shape == (4,)
    with pytest.raises(ValueError, match="train labels contain -1.*no labels"):
        eval_log_regression(x, torch.full_like(y, -1), x, y, c_values=[1.0])
    with pytest.raises(ValueError, match="at least 2 classes"):
        LogisticRegression(1.0).fit(x, torch.zeros_like(y))
    with pytest.raises(ValueError, match="C must be > 0"):
        LogisticRegression(0.0)
    with pytest.raises(ValueError, match=r"val features must be \[N, D\]"):
        eval_log_regression(x, y, x[:, 0], y, c_values=[1.0])


def _sweep_worker(rank, world_size):
    x, y = make_data(200, noise=2.5)
    tune_x, tune_y = make_data(150, noise=2.5, seed=1)
    return sweep_c_values(x, y, tune_x, tune_y, num_classes=4, c_values=C_GRID)


def test_two_process_sweep_equals_single_process():
    outputs = run_distributed(_sweep_worker, 2)
    x, y = make_data(200, noise=2.5)
    tune_x, tune_y = make_data(150, noise=2.5, seed=1)
    single = sweep_c_values(x, y, tune_x, tune_y, num_classes=4, c_values=C_GRID)
    for output in outputs:
        assert output["best_C"] == single["best_C"]
        assert [entry["C"] for entry in output["sweep"]] == [entry["C"] for entry in single["sweep"]]
        for metric in ("top-1", "top-5"):
            got = [entry[metric] for entry in output["sweep"]]
            assert got == pytest.approx([entry[metric] for entry in single["sweep"]]), metric


@pytest.mark.cuda
def test_cuda_fit_matches_cpu():
    x, y = make_data(150)
    cpu = LogisticRegression(1.0).fit(x, y)
    gpu = LogisticRegression(1.0).fit(x.cuda(), y.cuda())
    assert gpu.coef_.is_cuda
    torch.testing.assert_close(gpu.coef_.cpu(), cpu.coef_, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a process without CUDA")
def test_a_cuda_fit_device_without_cuda_is_refused_naming_the_flag():
    assert check_fit_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="--train-features-device cuda:1 but this process sees no CUDA device"):
        check_fit_device("cuda:1")


def test_a_train_set_too_small_for_the_hold_out_is_named():
    """8 training samples: the released 10 % hold-out is empty (before, ``max()`` of an empty tensor failed)."""
    x, y = torch.randn(8, 4), torch.arange(8) % 2
    with pytest.raises(ValueError, match=r"8 training samples leave no 10 % hold-out to choose C \(it needs at least"):
        eval_log_regression(x, y, x, y)
    assert eval_log_regression(x, y, x, y, finetune_on_val=True, max_iter=5)["best_C"] > 0  # C chosen on val
