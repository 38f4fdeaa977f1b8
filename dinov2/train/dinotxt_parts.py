"""The pieces of dino.txt training: the model over a frozen backbone from the backbone door, the trainable parts
(what the optimizer and the checkpoints hold), their FSDP2 sharding, parameter groups, the caption data stream."""

from __future__ import annotations

import dataclasses
from functools import partial

import torch
from torch import nn
from torchvision import transforms

from dinov2 import distributed
from dinov2.data import SamplerType, make_data_loader, make_dataset
from dinov2.data.transforms import make_classification_train_transform, make_normalize_transform
from dinov2.distributed.sharding import ShardingPolicy, shard_module
from dinov2.features import LoadedBackbone, load_backbone
from dinov2.text import TEXT_1280D20H24L, DinoTxt, TextTransformer, released_config
from dinov2.train.dinotxt_config import DinoTxtTrainConfig
from dinov2.utils.dtype import parse_dtype

__all__ = [
    "TrainableParts",
    "build_dinotxt_model",
    "shard_trainable_parts",
    "params_groups",
    "build_caption_loader",
    "image_transform",
]


class TrainableParts(nn.Module):
    """The trained tensors of a dino.txt model (vision head, text tower, ``logit_scale``), the very same objects:
    what the optimizer updates and the checkpoints hold (the frozen backbone is in neither)."""

    def __init__(self, model: DinoTxt) -> None:
        super().__init__()
        self.visual_head = model.visual_model.head
        self.text_model = model.text_model
        self.logit_scale = model.logit_scale


def build_dinotxt_model(cfg: DinoTxtTrainConfig, device: torch.device) -> tuple[DinoTxt, LoadedBackbone]:
    """The frozen backbone of ``cfg.backbone`` (through :func:`dinov2.features.load_backbone`) and a freshly
    initialised (seeded) vision head and text tower on ``device``."""
    b = cfg.backbone
    loaded = load_backbone(
        b.source,
        weights=b.weights or None,
        overrides=b.overrides,
        random_init=b.random_init,
        seed=cfg.seed,
        device=device,
        validate=False,
    )
    m = cfg.model
    config = released_config(
        m.embed_dim or 2 * loaded.embed_dim,
        vision_model_num_head_blocks=m.head_blocks,
        vision_model_head_blocks_drop_path=m.head_drop_path,
        vision_model_patch_tokens_pooler_type=m.patch_tokens_pooler,
        vision_model_patch_token_layer=m.patch_token_layer,
        init_logit_scale=m.init_logit_scale,
    )
    torch.manual_seed(cfg.seed)
    text = TextTransformer(**{**TEXT_1280D20H24L, **dataclasses.asdict(m.text)})  # sizes from the config
    model = DinoTxt(config, loaded.model, text)
    model.init_weights()
    return model.to(device), loaded


def shard_trainable_parts(model: DinoTxt, cfg: DinoTxtTrainConfig, device: torch.device) -> bool:
    """With ``train.fsdp`` and a process group, FSDP2 over every process (``dinov2.distributed.sharding``): the
    vision head; each text block, then the text transformer, then the text tower (its head).
    The frozen backbone (no gradient, nothing to shard in the optimizer) and ``logit_scale`` (one number) stay plain
    tensors, the same on every rank. Returns whether the parts were sharded (call before building the optimizer)."""
    if not cfg.train.fsdp or not distributed.is_enabled():
        return False
    from torch.distributed.device_mesh import init_device_mesh

    parts = TrainableParts(model)
    for tensor in [*parts.parameters(), *parts.buffers()]:
        distributed.broadcast(tensor.data, src=0)  # the same starting weights on every rank, whatever their seeds
    mesh = init_device_mesh(device.type, (distributed.get_global_size(),))
    policy = ShardingPolicy(cfg.train.sharding_strategy, param_dtype=parse_dtype(cfg.train.param_dtype))
    # The vision head is one unit: two blocks are cheap to gather at once, and a ViT block returns a view of its
    # output, which FSDP warns about when the block is a unit of its own.
    shard_module(model.visual_model.head, policy, mesh)
    shard_module(model.text_model.backbone, policy, mesh)  # its blocks, then the embeddings and final norm
    shard_module(model.text_model, policy, mesh)  # what is left: the text head (projection)
    return True


def params_groups(parts: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups as released: no weight decay for tensors with fewer than 2 dims and for names holding
    ``bn``, ``ln``, ``bias`` or ``logit_scale``; ``weight_decay`` for the others (embeddings included)."""
    decay, no_decay = [], []
    for name, param in parts.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or any(word in name for word in ("bn", "ln", "bias", "logit_scale"))
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def image_transform(cfg: DinoTxtTrainConfig, loaded: LoadedBackbone):
    """Released: RandomResizedCrop (bicubic) + flip + normalisation; or resize + centre crop."""
    size, norm = cfg.data.img_size, dict(mean=loaded.mean, std=loaded.std)
    if cfg.data.random_resized_crop:
        return make_classification_train_transform(crop_size=size, **norm)
    bicubic = transforms.InterpolationMode.BICUBIC
    return transforms.Compose(
        [
            transforms.Resize(size, interpolation=bicubic),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            make_normalize_transform(**norm),
        ]
    )


def _collate(samples, tokenizer, context_length: int):
    images = torch.stack([image for image, _ in samples])
    return images, tokenizer.tokenize([caption for _, caption in samples], context_length)


def build_caption_loader(cfg: DinoTxtTrainConfig, loaded: LoadedBackbone, tokenizer, start_iter: int):
    """The sharded infinite stream of ``(images [B, 3, S, S], token ids [B, C])``, shuffled, seeded per sample,
    advanced to ``start_iter`` (a resumed run sees the batches an uninterrupted one would)."""
    dataset = make_dataset(dataset_str=cfg.data.dataset, transform=image_transform(cfg, loaded))
    return make_data_loader(
        dataset=dataset,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        shuffle=True,
        seed=cfg.seed,
        sampler_type=SamplerType.SHARDED_INFINITE,
        sampler_advance=start_iter * cfg.data.batch_size,
        drop_last=True,
        collate_fn=partial(_collate, tokenizer=tokenizer, context_length=cfg.model.text.context_length),
    )
