"""The one place that decides which projection heads a training config gives its networks.

The student, the EMA teacher (SSL) and a frozen teacher (distillation, from the teacher's own training config)
all get their heads from :func:`heads_for`:

- ``dino_head`` when the DINO or the iBOT loss is on (a shared head also maps the masked patch tokens);
- ``ibot_head`` when iBOT is on with ``ibot.separate_head``.

A DINOv3 config (loaded over DINOv3's defaults) gets DINOv3's heads: the prototype layer is a plain linear layer
(``last_layer.weight``) instead of DINOv2's weight-normalised one (``last_layer.weight_g`` / ``weight_v``).

Which heads train is the owner's business: the student's heads train, every teacher's are frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig
from torch import nn

from dinov2.config.dinov3 import is_dinov3_form
from dinov2.layers.dino_head import DINOHead

__all__ = ["Heads", "heads_for"]


@dataclass(frozen=True)
class Heads:
    """The heads of one training config (see :func:`heads_for`)."""

    sections: dict[str, DictConfig]  # head name -> its config section (head_* keys), in build order
    ibot_prototypes: int  # prototypes of the iBOT logits: the iBOT head's, or the DINO head's when shared
    ibot_prototypes_key: str  # the config key that sets ``ibot_prototypes``
    weight_norm_last_layer: bool = True  # DINOv2's prototypes; DINOv3's configs: a plain linear layer

    @property
    def names(self) -> list[str]:
        return list(self.sections)

    def build(self, embed_dim: int, head_class: type[DINOHead] = DINOHead) -> dict[str, nn.Module]:
        """Fresh heads (randomly initialised, in build order) on top of a backbone of width ``embed_dim``."""
        return {
            name: head_class(
                in_dim=embed_dim,
                out_dim=section.head_n_prototypes,
                hidden_dim=section.head_hidden_dim,
                bottleneck_dim=section.head_bottleneck_dim,
                nlayers=section.head_nlayers,
                weight_norm_last_layer=self.weight_norm_last_layer,
            )
            for name, section in self.sections.items()
        }


def heads_for(cfg: DictConfig) -> Heads:
    """The heads a training config asks for (``dino.*`` / ``ibot.*`` sections)."""
    sections: dict[str, DictConfig] = {}
    if cfg.dino.loss_weight > 0 or cfg.ibot.loss_weight > 0:
        sections["dino_head"] = cfg.dino
    if cfg.ibot.loss_weight > 0 and cfg.ibot.separate_head:
        sections["ibot_head"] = cfg.ibot
    weight_norm = not is_dinov3_form(cfg)  # DINOv3's DINOHead has a plain linear last layer
    if cfg.ibot.separate_head:
        return Heads(sections, cfg.ibot.head_n_prototypes, "ibot.head_n_prototypes", weight_norm)
    return Heads(sections, cfg.dino.head_n_prototypes, "dino.head_n_prototypes", weight_norm)
