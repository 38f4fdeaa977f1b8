"""Multi-crop augmentation: rate of every random operation per crop (SPEC §5), parameter ranges and
outputs, for the released PIL path and the fast tensor path; the two paths draw identical parameters."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as tvF
from PIL import Image

from dinov2.data import DataAugmentationDINO
from dinov2.data import fast_augment as ops
from dinov2.data.transforms import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    make_classification_eval_transform,
    make_classification_train_transform,
)
from tests.conftest import torch_threads

N_IMAGES = 1000
N_LOCAL = 3
SIGMAS = 4.5  # binomial / uniform-mean tolerance, in standard errors


def _colourful_image(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200 + 30, y / height * 200 + 30, 230 - x / width * 150], axis=-1)
    noise = rng.normal(0, 8, size=base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


class _Recorder:
    """Collects, per crop kind, what each crop went through (patched functions write into ``current``)."""

    def __init__(self):
        self.crops: dict[str, list[dict]] = defaultdict(list)
        self.current: dict | None = None

    def mark(self, name, value=True):
        def wrap(fn, extract=None):
            def wrapped(*args, **kwargs):
                self.current.setdefault(name, []).append(extract(args) if extract else value)
                return fn(*args, **kwargs)

            return wrapped

        return wrap


def _record(fast: bool, n_images: int = N_IMAGES) -> dict[str, list[dict]]:
    recorder = _Recorder()

    class RecordingAugmentation(DataAugmentationDINO):
        def _crop(self, image, kind, parent):
            recorder.current = {}
            out = parent(self, image, kind)
            recorder.crops[kind].append(recorder.current)
            return out

        def _pil_crop(self, image, kind):
            return self._crop(image, kind, DataAugmentationDINO._pil_crop)

        def _tensor_crop(self, image, kind):
            return self._crop(image, kind, DataAugmentationDINO._tensor_crop)

    original_get_params = T.RandomResizedCrop.get_params

    def get_params(img, scale, ratio):
        i, j, h, w = original_get_params(img, scale, ratio)
        _, height, width = tvF.get_dimensions(img)
        recorder.current["box"] = (i, j, h, w, h * w / (height * width))
        return i, j, h, w

    module = ops if fast else tvF
    names = ("hflip", "to_grayscale" if fast else "rgb_to_grayscale", "solarize")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T.RandomResizedCrop, "get_params", staticmethod(get_params))
        for key, name in zip(("flip", "gray", "solarize"), names):
            mp.setattr(module, name, recorder.mark(key)(getattr(module, name)))
        sigma_of = (lambda a: a[1]) if fast else (lambda a: a[2][0])
        mp.setattr(module, "gaussian_blur", recorder.mark("blur")(module.gaussian_blur, sigma_of))
        for op in ("brightness", "contrast", "saturation", "hue"):
            fn_name = f"adjust_{op}"
            mp.setattr(module, fn_name, recorder.mark(op)(getattr(module, fn_name), lambda a: a[1]))
        aug = RecordingAugmentation((0.32, 1.0), (0.05, 0.32), N_LOCAL, 32, 16, fast=fast)
        image = _colourful_image()
        torch.manual_seed(0)
        for _ in range(n_images):
            aug(image)
    return dict(recorder.crops)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (data-loader workers also run one thread)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def records():
    return {"pil": _record(fast=False), "fast": _record(fast=True)}


def _assert_rate(flags: list[bool], p: float, what: str) -> None:
    n, k = len(flags), int(sum(flags))
    if p in (0.0, 1.0):
        assert k == p * n, f"{what}: {k}/{n}, expected probability {p}"
        return
    tolerance = SIGMAS * math.sqrt(p * (1 - p) / n)
    assert abs(k / n - p) <= tolerance, f"{what}: rate {k / n:.4f} over {n} crops, expected {p} +- {tolerance:.4f}"


def _assert_uniform(values: list[float], lo: float, hi: float, what: str) -> None:
    values = np.asarray(values)
    assert values.min() >= lo and values.max() <= hi, f"{what} outside [{lo}, {hi}]"
    tolerance = SIGMAS * (hi - lo) / math.sqrt(12 * len(values))
    assert abs(values.mean() - (lo + hi) / 2) <= tolerance, f"{what}: mean {values.mean():.4f} not uniform"


EXPECTED = {  # effective probabilities of SPEC §5: (blur, solarize)
    "global1": (0.0, 0.0),
    "global2": (0.9, 0.2),
    "local": (0.5, 0.0),
}


@pytest.mark.parametrize("path", ["pil", "fast"])
@pytest.mark.parametrize("kind", ["global1", "global2", "local"])
def test_operation_rates_match_spec(records, path, kind):
    crops = records[path][kind]
    assert len(crops) == N_IMAGES * (N_LOCAL if kind == "local" else 1)
    blur_p, solarize_p = EXPECTED[kind]
    _assert_rate(["flip" in c for c in crops], 0.5, f"{path} {kind} flip")
    _assert_rate(["brightness" in c for c in crops], 0.8, f"{path} {kind} colour jitter")
    _assert_rate(["gray" in c for c in crops], 0.2, f"{path} {kind} grayscale")
    _assert_rate(["blur" in c for c in crops], blur_p, f"{path} {kind} blur")
    _assert_rate(["solarize" in c for c in crops], solarize_p, f"{path} {kind} solarize")
    for crop in crops:  # a jitter applies its four operations once each, or none
        assert len({len(crop.get(op, [])) for op in ("brightness", "contrast", "saturation", "hue")}) == 1


@pytest.mark.parametrize("path", ["pil", "fast"])
def test_parameter_ranges(records, path):
    crops = [c for kind in ("global1", "global2", "local") for c in records[path][kind]]
    jittered = [c for c in crops if "brightness" in c]
    _assert_uniform([c["brightness"][0] for c in jittered], 0.6, 1.4, "brightness factor")
    _assert_uniform([c["contrast"][0] for c in jittered], 0.6, 1.4, "contrast factor")
    _assert_uniform([c["saturation"][0] for c in jittered], 0.8, 1.2, "saturation factor")
    _assert_uniform([c["hue"][0] for c in jittered], -0.1, 0.1, "hue factor")
    _assert_uniform([c["blur"][0] for c in crops if "blur" in c], 0.1, 2.0, "blur sigma")


@pytest.mark.parametrize("path", ["pil", "fast"])
@pytest.mark.parametrize("kind, scale", [("global1", (0.32, 1.0)), ("global2", (0.32, 1.0)), ("local", (0.05, 0.32))])
def test_crop_scales_in_range(records, path, kind, scale):
    areas = np.array([c["box"][4] for c in records[path][kind]])
    lo, hi = scale
    # w and h are rounded to pixels of a 64x48 source: allow that rounding (<= 10 % of a 12x12 local crop)
    assert areas.min() >= lo * 0.9 and areas.max() <= min(hi * 1.1, 1.0)
    assert lo < np.median(areas) < hi


def test_fast_and_pil_paths_draw_identical_parameters(records):
    """Same seed -> same crop boxes, flips, jitter factors, grayscale, blur sigmas and solarizations."""
    assert records["pil"] == records["fast"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_pixels_close_to_pil_path(seed):
    image = _colourful_image(160, 120, seed=seed)
    outputs = {}
    for fast in (False, True):
        torch.manual_seed(seed)
        out = DataAugmentationDINO((0.32, 1.0), (0.05, 0.32), 4, 64, 32, fast=fast)(image)
        outputs[fast] = out["global_crops"] + out["local_crops"]
        outputs[fast, "rng"] = torch.rand(1)
    assert torch.equal(outputs[False, "rng"], outputs[True, "rng"])  # same number of random draws
    for slow_crop, fast_crop in zip(outputs[False], outputs[True]):
        # PIL and tensor kernels round differently: ~1 grey level (0.017 normalised units) on average
        assert (slow_crop - fast_crop).abs().mean() < 0.06


@pytest.mark.parametrize("fast", [False, True])
def test_output_structure_shapes_and_normalisation(fast):
    colour = (200, 100, 50)
    image = Image.new("RGB", (80, 60), colour)
    aug = DataAugmentationDINO(
        (0.32, 1.0), (0.05, 0.32), 5, 48, 24, fast=fast, color_jitter_probability=0.0, grayscale_probability=0.0,
        global_crop2_blur_probability=0.0, local_crops_blur_probability=0.0, global_crop2_solarize_probability=0.0,
    )  # fmt: skip
    out = aug(image)
    assert set(out) == {"global_crops", "global_crops_teacher", "local_crops", "offsets"}
    assert out["offsets"] == ()
    assert len(out["global_crops"]) == 2 and len(out["local_crops"]) == 5
    assert all(a is b for a, b in zip(out["global_crops"], out["global_crops_teacher"]))
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    for crop, size in [(c, 48) for c in out["global_crops"]] + [(c, 24) for c in out["local_crops"]]:
        assert crop.shape == (3, size, size) and crop.dtype == torch.float32
        torch.testing.assert_close(crop, expected.view(3, 1, 1).expand_as(crop), rtol=0, atol=1e-5)


def test_zero_local_crops_and_tensor_input():
    image = torch.from_numpy(np.array(_colourful_image())).permute(2, 0, 1).contiguous()
    for fast in (False, True):
        out = DataAugmentationDINO((0.32, 1.0), (0.05, 0.32), 0, 32, 16, fast=fast)(image)
        assert out["local_crops"] == [] and out["global_crops"][0].shape == (3, 32, 32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"global_crops_scale": (0.0, 1.0)}, "global_crops_scale"),
        ({"local_crops_scale": (0.5, 0.1)}, "local_crops_scale"),
        ({"local_crops_number": -1}, "local_crops_number"),
        ({"local_crops_blur_probability": 1.5}, "local_crops_blur_probability"),
        ({"global_crops_size": 0}, "global_crops_size"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    args = {"global_crops_scale": (0.32, 1.0), "local_crops_scale": (0.05, 0.32), "local_crops_number": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        DataAugmentationDINO(**args)


# ------------------------------------------------------------------ fast pixel ops vs references


def _random_image(seed: int = 0, size: int = 40) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, size, size))).float()


def test_fast_ops_match_torchvision_tensor_ops():
    x = _random_image()
    unit = x / 255
    for factor in (-0.1, -0.03, 0.05, 0.1, 0.5):
        torch.testing.assert_close(ops.adjust_hue(x, factor), tvF.adjust_hue(unit, factor) * 255, rtol=0, atol=2e-3)
    torch.testing.assert_close(ops.adjust_brightness(x, 1.3), tvF.adjust_brightness(unit, 1.3) * 255)
    # torchvision's tensor grey uses 0.2989 instead of 601-2's 0.299: < 0.1 grey level apart
    torch.testing.assert_close(ops.adjust_contrast(x, 0.7), tvF.adjust_contrast(unit, 0.7) * 255, rtol=0, atol=0.1)
    torch.testing.assert_close(ops.adjust_saturation(x, 1.2), tvF.adjust_saturation(unit, 1.2) * 255, rtol=0, atol=0.1)
    for sigma in (0.1, 0.7, 2.0):
        torch.testing.assert_close(ops.gaussian_blur(x, sigma), tvF.gaussian_blur(x, [9, 9], [sigma, sigma]))
    u8 = x.to(torch.uint8)
    assert torch.equal(ops.solarize(x, 128.0).to(torch.uint8), tvF.solarize(u8, 128))
    assert torch.equal(ops.hflip(x), x.flip(-1))


def test_fast_grayscale_and_resize_match_pil():
    image = _colourful_image(64, 48)
    pixels = ops.to_uint8_chw(image)
    pil_grey = torch.from_numpy(np.array(image.convert("L"))).float()
    assert (ops.to_grayscale(pixels.float())[0] - pil_grey).abs().max() <= 1.0
    ours = ops.resized_crop(pixels, 5, 7, 30, 40, 24).float()
    pil = torch.from_numpy(np.array(tvF.resized_crop(image, 5, 7, 30, 40, [24, 24], T.InterpolationMode.BICUBIC)))
    assert (ours - pil.permute(2, 0, 1).float()).abs().mean() < 1.5


def test_classification_transforms():
    image = _colourful_image(500, 375)
    train = make_classification_train_transform()(image)
    evaluation = make_classification_eval_transform()(image)
    assert train.shape == evaluation.shape == (3, 224, 224)
    expected = tvF.normalize(
        tvF.to_tensor(tvF.center_crop(tvF.resize(image, 256, T.InterpolationMode.BICUBIC), 224)),
        IMAGENET_DEFAULT_MEAN,
        IMAGENET_DEFAULT_STD,
    )
    torch.testing.assert_close(evaluation, expected)
