"""Constants shared across floors: the ImageNet normalisation of every released backbone (released path:
``dinov2.data.transforms.IMAGENET_DEFAULT_MEAN`` / ``_STD``, which re-exports these)."""

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
