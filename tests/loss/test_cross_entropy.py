"""The memory-lean cross-entropy against the plain log_softmax formulation: values, gradients, saved memory."""

from __future__ import annotations

import pytest
import torch

from dinov2.loss.cross_entropy import cross_entropy_with_probs


def _inputs(n, k, n_teachers, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    student = (3 * torch.randn(n, k, generator=g)).to(dtype).requires_grad_()
    teachers = [torch.softmax(torch.randn(n, k, generator=g) / 0.05, dim=-1).to(dtype) for _ in range(n_teachers)]
    return student, teachers


def _value_and_grad(student, teachers, lean, **kwargs):
    student.grad = None
    per_row = cross_entropy_with_probs(student, teachers, 0.1, lean=lean, **kwargs)
    weights = torch.linspace(
        0.5, 1.5, per_row.shape[0], dtype=per_row.dtype, device=per_row.device
    )  # non-uniform upstream grad
    (per_row * weights).sum().backward()
    return per_row.detach(), student.grad.clone()


@pytest.mark.parametrize("n_teachers", [1, 2])
def test_lean_matches_plain_float32(n_teachers):
    student, teachers = _inputs(10, 96, n_teachers, torch.float32)
    lean_value, lean_grad = _value_and_grad(student, teachers, True, chunk_elements=3 * 96)  # 4 chunks, last partial
    plain_value, plain_grad = _value_and_grad(student, teachers, False)
    assert lean_value.dtype == torch.float32 and lean_grad.dtype == torch.float32
    torch.testing.assert_close(lean_value, plain_value, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(lean_grad, plain_grad, rtol=1e-5, atol=1e-6)


def test_lean_matches_plain_bfloat16():
    student, teachers = _inputs(12, 128, 2, torch.bfloat16)
    lean_value, lean_grad = _value_and_grad(student, teachers, True, chunk_elements=5 * 128)
    plain_value, plain_grad = _value_and_grad(student, teachers, False)
    assert lean_value.dtype == torch.float32 and lean_grad.dtype == torch.bfloat16
    torch.testing.assert_close(lean_value, plain_value, rtol=1e-6, atol=1e-5)  # both computed in float32
    torch.testing.assert_close(lean_grad, plain_grad, rtol=1e-2, atol=1e-4)  # one bf16 rounding each


def test_lean_under_autocast_is_float32():
    student, teachers = _inputs(4, 32, 1, torch.float32)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = cross_entropy_with_probs(student, teachers, 0.1)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, cross_entropy_with_probs(student, teachers, 0.1, lean=False))


def test_gradcheck_float64():
    student, teachers = _inputs(3, 7, 2, torch.float64)

    def fn(s):
        return cross_entropy_with_probs(s, teachers, 0.3, chunk_elements=14)

    assert torch.autograd.gradcheck(fn, (student,), eps=1e-6, atol=1e-6)


def test_lean_saves_no_extra_row_sized_tensor():
    """Lean: backward keeps only the inputs alive; plain keeps the [N, K] log_softmax output too."""
    n, k = 8, 64
    student, teachers = _inputs(n, k, 2, torch.float32)
    input_storages = {t.untyped_storage().data_ptr() for t in [student, *teachers]}

    def saved_big_foreign(lean):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            cross_entropy_with_probs(student, teachers, 0.1, lean=lean)
        big = [t for t in saved if t.numel() >= n * k]
        return [t for t in big if t.untyped_storage().data_ptr() not in input_storages], saved

    foreign, saved = saved_big_foreign(lean=True)
    assert foreign == [] and all(t.untyped_storage().data_ptr() in input_storages for t in saved)
    foreign, _ = saved_big_foreign(lean=False)
    assert len(foreign) >= 1


def test_empty_batch():
    student = torch.zeros(0, 16, requires_grad=True)
    value = cross_entropy_with_probs(student, torch.zeros(0, 16), 0.1)
    value.sum().backward()
    assert value.shape == (0,) and student.grad.shape == (0, 16)


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape", "temp", "match"),
    [
        ((4, 8), (4, 9), 0.1, "teacher probabilities #0 have shape"),
        ((4, 8), (3, 8), 0.1, "same N"),
        ((4, 8, 2), (4, 8, 2), 0.1, r"must be \[N, K\]"),
        ((4, 8), (4, 8), 0.0, "student_temp must be a finite number > 0"),
        ((4, 8), (4, 8), -0.1, "student_temp"),
    ],
)
def test_bad_inputs_raise(student_shape, teacher_shape, temp, match):
    with pytest.raises(ValueError, match=match):
        cross_entropy_with_probs(torch.zeros(student_shape), torch.zeros(teacher_shape), temp)


def test_teacher_with_grad_is_rejected_by_lean_path():
    student, (teacher,) = _inputs(2, 8, 1, torch.float32)
    with pytest.raises(ValueError, match="detach"):
        cross_entropy_with_probs(student, teacher.requires_grad_(), 0.1)
    with pytest.raises(ValueError, match="empty list"):
        cross_entropy_with_probs(student, [], 0.1)


def _cpu_peak_bytes(fn) -> int:
    """Peak of tensor bytes allocated (and not yet freed) while ``fn`` runs, from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_peak_memory_of_forward_backward(dtype):
    """Lean: the student gradient plus a few chunk-sized temporaries; plain: three float32 [N, K] tensors."""
    n, k, chunk_rows = 64, 4096, 4
    student, teachers = _inputs(n, k, 1, dtype)
    row_bytes = n * k * 4  # one float32 [N, K] tensor

    def step(lean):
        cross_entropy_with_probs(student, teachers, 0.1, lean=lean, chunk_elements=chunk_rows * k).sum().backward()

    peaks = {}
    for lean in (True, False):
        step(lean)  # warm-up
        student.grad = None
        peaks[lean] = _cpu_peak_bytes(lambda lean=lean: step(lean))
        student.grad = None
    grad_bytes = n * k * student.element_size()
    assert peaks[True] <= grad_bytes + 4 * chunk_rows * k * 4 + 4096
    assert peaks[False] >= 2 * row_bytes


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lean_matches_plain_on_cuda(dtype):
    student, teachers = _inputs(64, 8192, 2, dtype)
    student = student.detach().cuda().requires_grad_()
    teachers = [t.cuda() for t in teachers]
    lean_value, lean_grad = _value_and_grad(student, teachers, True, chunk_elements=16 * 8192)
    plain_value, plain_grad = _value_and_grad(student, teachers, False)
    torch.testing.assert_close(lean_value, plain_value, rtol=1e-5, atol=1e-4)
    tol = {"rtol": 1e-2, "atol": 1e-4} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(lean_grad, plain_grad, **tol)
