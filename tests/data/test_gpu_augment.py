"""Device data path (``train.data_device=cuda``) on CPU tensors: the workers draw exactly the CPU path's random
choices, the decoded + augmented batch matches the CPU fast path's, in the trainer's layout, resumably."""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinov2.data import (
    DataAugmentationDINO,
    MaskingGenerator,
    SamplerType,
    collate_data_and_cast,
    make_data_loader,
    make_dataset,
)
from dinov2.data import fast_augment as ops
from dinov2.data.datasets import CorruptImageError, ImageFolder
from dinov2.data.encoded_samples import EncodedCollate, EncodedSampleDataset
from dinov2.data.gpu_augment import DeviceAugmentation
from dinov2.data.transforms import IMAGENET_DEFAULT_STD
from tests.conftest import torch_threads

# torchvision 0.29 deprecates its image decoders in favour of TorchCodec (see docs/gpu.md, "The data side")
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

GLOBAL, LOCAL, N_LOCAL, BATCH = 32, 16, 3, 4
LEVEL = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1) * 255  # normalised units -> 8-bit levels


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def _augmentation(**kwargs) -> DataAugmentationDINO:
    return DataAugmentationDINO((0.32, 1.0), (0.05, 0.32), N_LOCAL, GLOBAL, LOCAL, **kwargs)


def _collate(dtype=torch.float32):
    return partial(
        collate_data_and_cast, mask_ratio_tuple=(0.1, 0.5), mask_probability=0.5, dtype=dtype,
        n_tokens=16, mask_generator=MaskingGenerator((4, 4), max_num_patches=8),
    )  # fmt: skip


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_augment") / "synthetic"
    make_dataset(
        dataset_str=f"Synthetic:root={root}:num_classes=3:images_per_class=5:val_images_per_class=0:size=72x56"
    )
    return root


def _dataset(root, augmentation):
    return make_dataset(
        dataset_str=f"Synthetic:root={root}:num_classes=3:images_per_class=5:val_images_per_class=0:size=72x56",
        transform=augmentation,
        target_transform=lambda _: (),
    )


def _loader(dataset, collate_fn, count, **kwargs):
    options = {"batch_size": BATCH, "num_workers": 0, "seed": 5, "sampler_type": SamplerType.SHARDED_INFINITE}
    loader = make_data_loader(dataset=dataset, collate_fn=collate_fn, **{**options, **kwargs})
    return list(itertools.islice(iter(loader), count))


def _device_batches(dataset, augmentation, count, dtype=torch.float32, **kwargs):
    stage = DeviceAugmentation(augmentation, "cpu", dtype)
    options = {"batch_size": BATCH, "num_workers": 0, "seed": 5, "sampler_type": SamplerType.SHARDED_INFINITE}
    dataset, collate_fn = stage.encoded_dataset(dataset), stage.encoded_collate(_collate(dtype))
    loader = make_data_loader(dataset=dataset, collate_fn=collate_fn, **{**options, **kwargs})
    return list(itertools.islice(iter(stage.batches(loader)), count))


class _Recording(DataAugmentationDINO):
    """The CPU fast path, recording the parameters each crop was made with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []

    def apply_crop_params(self, image, params, size):
        self.records.append(params)
        return super().apply_crop_params(image, params, size)


def test_workers_draw_the_cpu_paths_parameters(synthetic_root):
    """Same seeds -> identical crop boxes, flips, jitter orders/factors, grayscale, blur sigmas, solarizations."""
    recording = _Recording((0.32, 1.0), (0.05, 0.32), N_LOCAL, GLOBAL, LOCAL)
    _loader(_dataset(synthetic_root, recording), _collate(), 4)
    cpu_params = recording.records  # 16 images x 5 crops, in loader order

    augmentation = _augmentation()
    dataset = EncodedSampleDataset(_dataset(synthetic_root, augmentation), augmentation)
    samples = [s for batch in _loader(dataset, lambda b: list(b), 4) for s, _ in batch]
    device_params = [p for sample in samples for p in sample.params]
    assert len(cpu_params) == len(device_params) == 16 * (2 + N_LOCAL)
    assert device_params == cpu_params
    assert len({p.blur_sigma for p in device_params}) > 5  # genuinely random choices
    assert all(sample.encoded and sample.data.dim() == 1 for sample in samples)  # JPEG bytes, not decoded

    tables = EncodedCollate(_collate())([(s, ()) for s in samples[:BATCH]])  # crop-major tables
    for b, sample in enumerate(samples[:BATCH]):
        for c, p in enumerate(sample.params):
            assert tables["boxes"][b, c].tolist() == [p.top, p.left, p.height, p.width]
            assert bool(tables["flip"][c, b]) == p.flip and bool(tables["solarize"][c, b]) == p.solarize
            assert bool(tables["jitter"][c, b]) == (p.jitter_order is not None)
            if p.jitter_order is not None:
                assert tuple(tables["jitter_order"][c, b].tolist()) == p.jitter_order
                assert tables["jitter_factors"][c, b].tolist() == [p.brightness, p.contrast, p.saturation, p.hue]
            assert tables["blur_sigma"][c, b].item() == (p.blur_sigma or 0.0)


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a.float() - b.float()) * LEVEL).abs()


def _assert_matches(expected: torch.Tensor, got: torch.Tensor, what: str) -> None:
    """Crops equal up to a rare 1-level flip: the resize is bit-exact and the colour operations are the same
    functions, but a batched reduction (contrast mean, grey level) may round a float differently from the
    single-image one. Measured: identical on every batch of these tests."""
    assert expected.shape == got.shape and expected.dtype == got.dtype, what
    diff = _levels(expected, got)
    assert diff.max() <= 1.01 and (diff > 0.01).float().mean() < 1e-3, what


def test_device_batch_matches_the_cpu_fast_path(synthetic_root):
    """Same masks; the same crops as the workers' CPU fast path (decode_jpeg on CPU = PIL's libjpeg-turbo)."""
    augmentation = _augmentation()
    cpu = _loader(_dataset(synthetic_root, augmentation), _collate(), 3)
    device = _device_batches(_dataset(synthetic_root, augmentation), augmentation, 3)
    for expected, got in zip(cpu, device):
        assert expected.keys() == got.keys()
        for key in ("collated_masks", "mask_indices_list", "masks_weight", "n_masked_patches"):
            assert torch.equal(expected[key], got[key]), key
        assert expected["upperbound"] == got["upperbound"]
        for key in ("collated_global_crops", "collated_local_crops"):
            _assert_matches(expected[key], got[key], key)


def test_output_dtype_is_the_trainers(synthetic_root):
    augmentation = _augmentation()
    (full,) = _device_batches(_dataset(synthetic_root, augmentation), augmentation, 1)
    (half,) = _device_batches(_dataset(synthetic_root, augmentation), augmentation, 1, dtype=torch.bfloat16)
    for key in ("collated_global_crops", "collated_local_crops"):
        assert half[key].dtype == torch.bfloat16
        assert torch.equal(half[key], full[key].to(torch.bfloat16))


def _write_jpeg(path: Path, colour, size=(40, 30), mode="RGB"):
    image = Image.new("RGB", size, colour).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=95)


def test_layout_is_crop_major(tmp_path):
    """Uniform images and no photometric operation: crop c of sample b sits at row c * B + b."""
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
    for i, colour in enumerate(colours):
        _write_jpeg(tmp_path / f"{i}.jpg", colour)
    augmentation = _augmentation(
        color_jitter_probability=0.0, grayscale_probability=0.0, global_crop2_blur_probability=0.0,
        local_crops_blur_probability=0.0, global_crop2_solarize_probability=0.0,
    )  # fmt: skip
    stage = DeviceAugmentation(augmentation, "cpu", torch.float32)
    dataset = stage.encoded_dataset(ImageFolder(root=str(tmp_path)))
    batch = stage(stage.encoded_collate(_collate())([dataset[i] for i in range(4)]))
    assert batch["collated_global_crops"].shape == (2 * 4, 3, GLOBAL, GLOBAL)
    assert batch["collated_local_crops"].shape == (N_LOCAL * 4, 3, LOCAL, LOCAL)
    scale, shift = ops.normalization_constants(augmentation.mean, augmentation.std)
    for key, n_crops in (("collated_global_crops", 2), ("collated_local_crops", N_LOCAL)):
        crops = batch[key]
        for c in range(n_crops):
            for b, colour in enumerate(colours):
                mean_colour = ((crops[c * 4 + b] + shift) / scale).mean((-2, -1))
                assert (mean_colour - torch.tensor(colour, dtype=torch.float32)).abs().max() < 3, (key, c, b)


def test_png_grey_and_cmyk_images(tmp_path):
    """PNG and CMYK JPEG are decoded by the workers (as the CPU path does), grey JPEG by decode_jpeg; all match."""
    rng = np.random.default_rng(0)
    pixels = np.clip(np.cumsum(rng.integers(0, 40, (48, 64, 3)), axis=1) % 256, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).convert("L").save(tmp_path / "b.jpg", quality=95)
    Image.fromarray(pixels).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    Image.fromarray(pixels).save(tmp_path / "d.jpg", quality=95)
    augmentation = _augmentation()
    dataset = ImageFolder(root=str(tmp_path), transform=augmentation, target_transform=lambda _: ())
    stage = DeviceAugmentation(augmentation, "cpu", torch.float32)
    encoded = stage.encoded_dataset(dataset)
    assert [encoded[i][0].encoded for i in range(4)] == [False, True, False, True]
    samples = []
    for i in range(4):
        torch.manual_seed(i)
        samples.append(encoded[i])
    got = stage(stage.encoded_collate(_collate())(samples))
    expected_samples = []
    for i in range(4):
        torch.manual_seed(i)
        expected_samples.append(dataset[i])
    expected = _collate()(expected_samples)
    for key in ("collated_global_crops", "collated_local_crops"):
        _assert_matches(expected[key], got[key], key)


def test_unreadable_files_follow_the_datasets_strict_flag(tmp_path):
    for i in range(3):
        _write_jpeg(tmp_path / f"{i}.jpg", (40 * i, 100, 100))
    (tmp_path / "1.jpg").write_bytes(b"not an image at all")
    augmentation = _augmentation()
    lenient = EncodedSampleDataset(ImageFolder(root=str(tmp_path)), augmentation)
    sample, _ = lenient[1]  # skipped: the next readable image, as the CPU path does
    assert sample.source.endswith("2.jpg") and lenient.dataset.bad_indices == {1}
    strict = EncodedSampleDataset(ImageFolder(root=str(tmp_path), strict=True), augmentation)
    with pytest.raises(CorruptImageError, match="1.jpg"):
        strict[1]


def test_truncated_jpeg_is_named_by_the_device_stage(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for i in range(2):
        Image.fromarray(noise).save(tmp_path / f"{i}.jpg", quality=95)
    data = (tmp_path / "1.jpg").read_bytes()
    (tmp_path / "1.jpg").write_bytes(data[: len(data) * 3 // 4])  # the header reads, the pixels do not
    augmentation = _augmentation()
    stage = DeviceAugmentation(augmentation, "cpu", torch.float32)
    dataset = stage.encoded_dataset(ImageFolder(root=str(tmp_path)))
    batch = stage.encoded_collate(_collate())([dataset[0], dataset[1]])
    with pytest.raises(CorruptImageError, match="1.jpg"):
        stage(batch)


def test_resume_is_exact_and_workers_do_not_matter(synthetic_root):
    augmentation = _augmentation()
    dataset = _dataset(synthetic_root, augmentation)
    uninterrupted = _device_batches(dataset, augmentation, 5)
    resumed = _device_batches(dataset, augmentation, 3, sampler_advance=2 * BATCH, num_workers=2)
    for a, b in zip(uninterrupted[2:], resumed):
        for key in a:
            assert torch.equal(a[key], b[key]) if torch.is_tensor(a[key]) else a[key] == b[key], key


def test_encoded_dataset_needs_image_bytes():
    with pytest.raises(TypeError, match="get_image_data"):
        EncodedSampleDataset(list(range(3)), _augmentation())


def test_batched_colour_ops_equal_the_single_image_ops():
    """The fast_augment functions on a batch with one factor per crop = the same functions crop by crop."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (5, 3, 20, 24), generator=generator).float()
    factors = torch.rand(5, generator=generator) * 0.8 + 0.6
    hues = torch.rand(5, generator=generator) * 0.2 - 0.1
    sigmas = torch.rand(5, generator=generator) * 1.9 + 0.1
    cases = [(op, factors) for op in (ops.adjust_brightness, ops.adjust_contrast, ops.adjust_saturation)]
    for op, values in cases + [(ops.adjust_hue, hues)]:
        batched = op(x, values.view(-1, 1, 1, 1))
        single = torch.stack([op(x[k], values[k].item()) for k in range(5)])
        torch.testing.assert_close(batched, single, rtol=0, atol=1e-3)
    blurred = ops.gaussian_blur_batch(x, sigmas)
    torch.testing.assert_close(blurred, torch.stack([ops.gaussian_blur(x[k], sigmas[k].item()) for k in range(5)]))
    torch.testing.assert_close(ops.to_grayscale(x), torch.stack([ops.to_grayscale(x[k]) for k in range(5)]))


# ------------------------------------------------------------------------------------------ CUDA


def _encoded_batch(root, augmentation):
    stage = DeviceAugmentation(augmentation, "cpu", torch.float32)
    dataset = stage.encoded_dataset(_dataset(root, augmentation))
    samples = []
    for i in range(8):
        torch.manual_seed(i)
        samples.append(dataset[i])
    return stage.encoded_collate(_collate())(samples)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_never_waits_for_the_device(synthetic_root):
    """nvJPEG decodes within a few levels of libjpeg-turbo; the crops follow; augmenting never waits for the GPU."""
    augmentation = _augmentation()
    batch = _encoded_batch(synthetic_root, augmentation)
    on_cpu = DeviceAugmentation(augmentation, "cpu", torch.float32)
    on_cuda = DeviceAugmentation(augmentation, "cuda", torch.float32)
    decoded_cpu, decoded_cuda = on_cpu.decode(batch), on_cuda.decode(batch)
    for a, b in zip(decoded_cpu, decoded_cuda):
        assert a.shape == b.shape and (a.float() - b.cpu().float()).abs().mean() < 4.0
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = on_cuda.augment(decoded_cuda, batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # same decoded pixels on both devices: the resize is exact on CUDA too; float rounding of the colour operations
    # may differ from the CPU's in the last bit
    same_pixels = on_cuda.augment([image.cuda() for image in decoded_cpu], batch)
    expected = on_cpu.augment(decoded_cpu, batch)
    for key in ("collated_global_crops", "collated_local_crops"):
        assert got[key].device.type == "cuda" and got[key].shape == expected[key].shape
        diff = _levels(expected[key], same_pixels[key].cpu())
        assert diff.max() <= 2.01 and (diff > 0.01).float().mean() < 1e-3, key
        assert _levels(expected[key], got[key].cpu()).mean() < 4.0, key  # nvJPEG's decode differs a little
    assert torch.equal(got["collated_masks"].cpu(), expected["collated_masks"])


def test_colour_op_constants_follow_the_input_dtype():
    generator = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (2, 3, 12, 10), generator=generator).double()
    factor = torch.tensor([0.7, 1.3], dtype=torch.float64).view(-1, 1, 1, 1)
    outputs = {
        "contrast": ops.adjust_contrast(x, factor),
        "saturation": ops.adjust_saturation(x, factor),
        "hue": ops.adjust_hue(x, factor / 10),
        "grayscale": ops.to_grayscale(x),
        "blur": ops.gaussian_blur_batch(x, torch.tensor([0.5, 1.5], dtype=torch.float64)),
        "single blur": ops.gaussian_blur(x[0], 0.8),
    }
    for name, out in outputs.items():
        assert out.dtype == torch.float64, name
    torch.testing.assert_close(outputs["blur"].float(), ops.gaussian_blur_batch(x.float(), torch.tensor([0.5, 1.5])))
