"""torch.hub models: released backbones (``backbones``) and ImageNet linear classifiers (``classifiers``)."""
