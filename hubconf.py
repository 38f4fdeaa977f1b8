"""torch.hub entry points: ``torch.hub.load("facebookresearch/dinov2", "dinov2_vits14")`` or a local clone
(``torch.hub.load(path, "dinov2_vits14", source="local")``)."""

from dinov2.hub.backbones import (
    dinov2_vitb14,
    dinov2_vitb14_reg,
    dinov2_vitg14,
    dinov2_vitg14_reg,
    dinov2_vitl14,
    dinov2_vitl14_reg,
    dinov2_vits14,
    dinov2_vits14_reg,
)
from dinov2.hub.classifiers import (
    dinov2_vitb14_lc,
    dinov2_vitb14_reg_lc,
    dinov2_vitg14_lc,
    dinov2_vitg14_reg_lc,
    dinov2_vitl14_lc,
    dinov2_vitl14_reg_lc,
    dinov2_vits14_lc,
    dinov2_vits14_reg_lc,
    dinov3_vit7b16_lc,
)
from dinov2.hub.depthers import (
    dinov2_vitb14_dd,
    dinov2_vitb14_ld,
    dinov2_vitg14_dd,
    dinov2_vitg14_ld,
    dinov2_vitl14_dd,
    dinov2_vitl14_ld,
    dinov2_vits14_dd,
    dinov2_vits14_ld,
    dinov3_vit7b16_dd,
    dinov3_vitl16_chmv2,
)
from dinov2.hub.detectors import dinov3_vit7b16_de
from dinov2.hub.dinotxt import (
    dinov2_vitl14_reg4_dinotxt_tet1280d20h24l,
    dinov3_vitl16_dinotxt_tet1280d20h24l,
    get_tokenizer,
)
from dinov2.hub.dinov3_backbones import (
    dinov3_convnext_base,
    dinov3_convnext_large,
    dinov3_convnext_small,
    dinov3_convnext_tiny,
    dinov3_vit7b16,
    dinov3_vitb16,
    dinov3_vith16plus,
    dinov3_vitl16,
    dinov3_vitl16plus,
    dinov3_vits16,
    dinov3_vits16plus,
)
from dinov2.hub.segmentors import (
    dinov2_vitb14_ade20k_linear,
    dinov2_vitb14_ade20k_ms,
    dinov2_vitb14_voc2012_linear,
    dinov2_vitb14_voc2012_ms,
    dinov2_vitg14_ade20k_linear,
    dinov2_vitg14_ade20k_ms,
    dinov2_vitg14_voc2012_linear,
    dinov2_vitg14_voc2012_ms,
    dinov2_vitl14_ade20k_linear,
    dinov2_vitl14_ade20k_ms,
    dinov2_vitl14_voc2012_linear,
    dinov2_vitl14_voc2012_ms,
    dinov2_vits14_ade20k_linear,
    dinov2_vits14_ade20k_ms,
    dinov2_vits14_voc2012_linear,
    dinov2_vits14_voc2012_ms,
    dinov3_vit7b16_ms,
)

dependencies = ["torch"]
