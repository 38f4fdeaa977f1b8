"""Hub entry points of the released dino.txt models, ``dinov2_vitl14_reg4_dinotxt_tet1280d20h24l`` and its tokenizer,
and DINOv3's ``dinov3_vitl16_dinotxt_tet1280d20h24l`` (see its docstring: gated files, one file for the vision head
and the text encoder, ``(model, tokenizer)`` returned as released).

The model: the frozen DINOv2 ViT-L/14 with 4 registers, a 2-block vision head over its tokens, a 1280-d 24-layer
causal text transformer, a 2048-d joint space (``encode_image``, ``encode_text``, ``get_logits``, ``forward``).

Files (each read through :mod:`dinov2.models.weights`, ``weights_only=True``, and loaded strictly): the backbone
(``backbone_weights``, else the released ``dinov2_vitl14_reg4_pretrain.pth``), the vision head
(``vision_head_weights``, else the released ``..._vision_head.pth``: keys ``block_list.*``, ``ln_final.*``) and the text
encoder (``text_encoder_weights``, else the released ``..._text_encoder.pth``: ``backbone.*``, ``head.*``). Released
files are downloaded only when ``pretrained`` (default True, the released behaviour); local paths are loaded whatever
``pretrained`` says, so ``pretrained=False`` with the three paths never touches the network and ``pretrained=False``
alone builds a randomly initialised model. ``logit_scale`` is in no released file: it stays ``ln(1/0.07)`` as released.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from enum import Enum
from pathlib import Path

import torch

from dinov2.hub import catalog, dinov3_backbones
from dinov2.hub.backbones import Weights as BackboneWeights
from dinov2.hub.backbones import make_backbone
from dinov2.hub.dinov3_backbones import Weights as DINOv3Weights
from dinov2.hub.dinov3_backbones import checked_source
from dinov2.hub.utils import load_strict
from dinov2.models.families import family_for_weights
from dinov2.models.weights import WeightsMismatchError, is_url, read_checkpoint
from dinov2.text import TEXT_1280D20H24L, DinoTxt, DinoTxtConfig, TextTransformer, released_config
from dinov2.text.tokenizer import Tokenizer, find_vocab
from dinov2.text.tokenizer import get_tokenizer as _get_tokenizer
from dinov2.utils.io import atomic_torch_save

__all__ = [
    "dinov2_vitl14_reg4_dinotxt_tet1280d20h24l",
    "dinov3_vitl16_dinotxt_tet1280d20h24l",
    "DINOTxtWeights",
    "make_dinov3_dinotxt",
    "get_tokenizer",
    "make_dinotxt",
    "save_dinotxt",
    "load_dinotxt",
    "dinotxt_file_content",
    "add_dinotxt_args",
    "check_dinotxt_args",
    "dinotxt_from_args",
    "VISION_HEAD_URL",
    "TEXT_ENCODER_URL",
]

_NAME = "dinov2_vitl14_reg4_dinotxt_tet1280d20h24l"
_FOLDER = f"{catalog.DINOV2_BASE_URL}/{catalog.model_name('vit_large', 14)}"
VISION_HEAD_URL = f"{_FOLDER}/{_NAME}_vision_head.pth"
TEXT_ENCODER_URL = f"{_FOLDER}/{_NAME}_text_encoder.pth"

PathArg = str | os.PathLike


def _read(source: PathArg | None, url: str, pretrained: bool, argument: str) -> tuple[dict | None, object]:
    """``(state dict, source)``: the file given, the released file when ``pretrained``, else ``(None, None)``."""
    if source is None and not pretrained:
        return None, None
    source = url if source is None else source
    return dict(read_checkpoint(source, argument=argument)), source


def _text_transformer(text_kwargs: dict, from_file: bool) -> TextTransformer:
    """The text transformer; on the meta device when a file sets every tensor (skips the 538M-parameter
    initialisation: ``to_empty`` then the strict load fill it)."""
    if not from_file:
        return TextTransformer(**text_kwargs)
    with torch.device("meta"):
        return TextTransformer(**text_kwargs)


def make_dinotxt(
    backbone_name: str,
    text_kwargs: dict,
    *,
    pretrained: bool,
    backbone_weights: BackboneWeights | PathArg | None,
    vision_head_weights: PathArg | None,
    text_encoder_weights: PathArg | None,
    urls: tuple[str, str] = (VISION_HEAD_URL, TEXT_ENCODER_URL),
) -> DinoTxt:
    """dino.txt over hub backbone ``backbone_name`` with a text transformer of ``text_kwargs`` (the released
    configuration otherwise); files as the module docstring says. Eval mode."""
    head_state, head_source = _read(vision_head_weights, urls[0], pretrained, "vision_head_weights")
    text_state, text_source = _read(text_encoder_weights, urls[1], pretrained, "text_encoder_weights")
    backbone = make_backbone(backbone_name, pretrained=pretrained, weights=backbone_weights or BackboneWeights.LVD142M)
    text_backbone = _text_transformer(text_kwargs, from_file=text_state is not None)
    model = DinoTxt(released_config(2 * int(backbone.embed_dim)), backbone, text_backbone)
    model.visual_model.head.init_weights()
    if text_state is not None:
        model.text_model.to_empty(device=backbone.cls_token.device)
        load_strict(model.text_model, text_state, text_source, f"{_NAME} text encoder")
    else:
        model.text_model.head.init_weights()
    if head_state is not None:
        load_strict(model.visual_model.head, head_state, head_source, f"{_NAME} vision head")
    return model.eval()


def dinov2_vitl14_reg4_dinotxt_tet1280d20h24l(
    *,
    pretrained: bool = True,
    backbone_weights: BackboneWeights | PathArg | None = None,
    vision_head_weights: PathArg | None = None,
    text_encoder_weights: PathArg | None = None,
) -> DinoTxt:
    """dino.txt on DINOv2 ViT-L/14 with registers (81.6 % zero-shot ImageNet top-1 in the DINOv3 paper), eval mode."""
    return make_dinotxt(
        "dinov2_vitl14_reg",
        TEXT_1280D20H24L,
        pretrained=pretrained,
        backbone_weights=backbone_weights,
        vision_head_weights=vision_head_weights,
        text_encoder_weights=text_encoder_weights,
    )


# ------------------------------------------------------------------------------------------------ DINOv3's dino.txt
_V3_NAME = "dinov3_vitl16_dinotxt_tet1280d20h24l"
DINOV3_DINOTXT_FILE = "dinov3_vitl16_dinotxt_vision_head_and_text_encoder-a442d8f5.pth"  # behind the licence form
DINOV3_VOCAB_URL = f"{catalog.DINOV3_BASE_URL}/thirdparty/bpe_simple_vocab_16e6.txt.gz"
_V3_HEAD = "visual_model.head."


class DINOTxtWeights(Enum):
    """Training data of the released DINOv3 dino.txt weights."""

    LVTD2300M = "LVTD2300M"


def _released_v3_state(state: dict, source: object) -> dict:
    """The release's one-file layout (``visual_model.head.blocks.*``, ``text_model.*``, ``logit_scale``) in this
    model's names (the vision head's blocks are ``block_list``, as in DINOv2's head file)."""
    if any(k.startswith("visual_model.backbone.") for k in state):
        raise WeightsMismatchError(
            f"{source} holds backbone tensors (visual_model.backbone.*): the released DINOv3 dino.txt file holds the "
            "vision head and the text encoder only; pass the backbone file as backbone_weights"
        )
    head_blocks = _V3_HEAD + "blocks."
    renamed = {}
    for key, value in state.items():
        renamed[_V3_HEAD + "block_list." + key[len(head_blocks) :] if key.startswith(head_blocks) else key] = value
    return renamed


def make_dinov3_dinotxt(
    backbone_name: str,
    text_kwargs: dict,
    *,
    pretrained: bool,
    weights: DINOTxtWeights | PathArg,
    backbone_weights: DINOv3Weights | PathArg,
    check_hash: bool = False,
) -> DinoTxt:
    """DINOv3's dino.txt over hub backbone ``backbone_name`` with a text transformer of ``text_kwargs``, files as
    :func:`dinov3_vitl16_dinotxt_tet1280d20h24l` says. Eval mode."""
    state, source = None, None
    if not isinstance(weights, DINOTxtWeights):  # read and checked before the backbone is built: fails fast
        source = str(weights)
        checked = checked_source(_V3_NAME, source, check_hash)
        state = _released_v3_state(dict(read_checkpoint(checked, argument="weights")), source)
    make = getattr(dinov3_backbones, backbone_name)  # the released entry point (file-name rules, check_hash)
    backbone = make(pretrained=pretrained, weights=backbone_weights, check_hash=check_hash)
    if state is None and pretrained:
        raise catalog.gated_weights_error(_V3_NAME, DINOV3_DINOTXT_FILE)
    text_backbone = _text_transformer(text_kwargs, from_file=state is not None)
    model = DinoTxt(released_config(2 * int(backbone.embed_dim)), backbone, text_backbone)
    if state is None:
        model.init_weights()
        return model.eval()
    model.text_model.to_empty(device=next(backbone.parameters()).device)
    state |= {f"visual_model.backbone.{k}": v for k, v in backbone.state_dict().items()}
    load_strict(model, state, source, f"{_V3_NAME} vision head and text encoder")
    return model.eval()


def dinov3_vitl16_dinotxt_tet1280d20h24l(
    *,
    pretrained: bool = True,
    weights: DINOTxtWeights | PathArg = DINOTxtWeights.LVTD2300M,
    backbone_weights: DINOv3Weights | PathArg = DINOv3Weights.LVD1689M,
    bpe_path_or_url: str | os.PathLike = DINOV3_VOCAB_URL,
    check_hash: bool = False,
) -> tuple[DinoTxt, Tokenizer]:
    """dino.txt on DINOv3 ViT-L/16 (82.3 % zero-shot ImageNet top-1 in the DINOv3 paper) and its tokenizer, as
    released: ``(model, tokenizer)``, eval mode.

    The release gates its files behind a licence form, so ``pretrained=True`` needs ``backbone_weights=`` (the
    ``dinov3_vitl16`` file, see :func:`dinov2.hub.dinov3_backbones.dinov3_vitl16`) and ``weights=`` (the
    ``dinov3_vitl16_dinotxt_vision_head_and_text_encoder-a442d8f5.pth`` file or its personal URL), both loaded
    strictly (the release loads the dino.txt file with ``strict=False``: a misnamed key went unnoticed). A local
    ``weights`` file is loaded whatever ``pretrained`` says; ``pretrained=False`` alone gives random weights.
    ``check_hash`` checks each file's sha256 against the 8 hex digits its released name ends with. The vocabulary
    is ``bpe_path_or_url``; the default (the release's URL) is read from an installed package that ships OpenAI's
    CLIP vocabulary (the same file) when there is one, else downloaded once into the torch hub cache."""
    model = make_dinov3_dinotxt(
        "dinov3_vitl16",
        TEXT_1280D20H24L,
        pretrained=pretrained,
        weights=weights,
        backbone_weights=backbone_weights,
        check_hash=check_hash,
    )
    installed = find_vocab() if str(bpe_path_or_url) == DINOV3_VOCAB_URL else None
    return model, get_tokenizer(installed or bpe_path_or_url)


def get_tokenizer(vocab_path: PathArg | None = None) -> Tokenizer:
    """The CLIP BPE tokenizer of dino.txt (``tokenize(texts, context_length=77)``, ``encode``, ``decode``); see
    :func:`dinov2.text.tokenizer.get_tokenizer` for where the vocabulary comes from (no download by default)."""
    return _get_tokenizer(vocab_path)


# ------------------------------------------------------------------------------------------------ dino.txt files
FILE_KEY = "dinotxt"  # a dino.txt file: {"dinotxt": {config, text, backbone, backbone_kwargs}, "model": state dict}


def dinotxt_file_content(model: DinoTxt, backbone: str | None = None, backbone_kwargs: dict | None = None) -> dict:
    """What a dino.txt file holds: the configuration and every tensor but the frozen backbone's when ``backbone``
    names the hub backbone that rebuilds it; without a name the backbone tensors are stored too (any family: its
    architecture is read back from them)."""
    if backbone is not None:
        catalog.get_backbone(backbone)  # a name that make_backbone can build again
    text = model.text_model.backbone.arch_kwargs
    if text is None:
        raise ValueError(
            "this dino.txt model's text transformer has a custom act_layer / norm_layer, which a weights-only "
            "dino.txt file cannot name; build it with the defaults (nn.GELU, nn.LayerNorm) to save it here"
        )
    state = model.state_dict()
    if backbone is not None:
        state = {k: v for k, v in state.items() if not k.startswith("visual_model.backbone.")}
    meta = dict(
        config=dataclasses.asdict(model.model_config),
        text=dict(text),
        backbone=backbone,
        backbone_kwargs=dict(backbone_kwargs or {}),
    )
    return {FILE_KEY: meta, "model": state}


def save_dinotxt(model: DinoTxt, path: PathArg, backbone: str | None = None, backbone_kwargs: dict | None = None):
    """Write a dino.txt file (atomic; see :func:`dinotxt_file_content`), read back by :func:`load_dinotxt`."""
    return atomic_torch_save(dinotxt_file_content(model, backbone, backbone_kwargs), path)


def _stored_backbone(state: dict) -> torch.nn.Module:
    """The backbone whose tensors a dino.txt file holds (``visual_model.backbone.*``), its family's architecture."""
    prefix = "visual_model.backbone."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    family = family_for_weights(weights)
    arch, kwargs = family.kwargs_from_weights(weights)
    return family.archs[arch](**kwargs)  # initialised: a buffer the file does not hold keeps its value


def load_dinotxt(
    path: PathArg, *, pretrained: bool = True, backbone_weights: BackboneWeights | PathArg | None = None
) -> DinoTxt:
    """A dino.txt model from a file of :func:`save_dinotxt` (strict), eval mode. The backbone: the stored one, or
    the file's hub backbone with ``backbone_weights`` (a local file) when given, else its released weights when
    ``pretrained``."""
    content = read_checkpoint(path, argument="dino.txt file")
    if FILE_KEY not in content or "model" not in content:
        raise ValueError(
            f"{str(path)!r} is not a dino.txt file (no {FILE_KEY!r} / 'model' entries; keys: {sorted(content)[:8]}); "
            "pass a file written by the dino.txt trainer or save_dinotxt"
        )
    meta, state = content[FILE_KEY], dict(content["model"])
    if meta["backbone"] is None:
        backbone = _stored_backbone(state)
    else:
        weights = backbone_weights or BackboneWeights.LVD142M
        backbone = make_backbone(meta["backbone"], pretrained=pretrained, weights=weights, **meta["backbone_kwargs"])
        state |= {f"visual_model.backbone.{k}": v for k, v in backbone.state_dict().items()}
    with torch.device("meta"):  # every text tensor is in the file
        text_backbone = TextTransformer(**meta["text"])
    model = DinoTxt(DinoTxtConfig(**meta["config"]), backbone, text_backbone)
    model.text_model.to_empty(device="cpu")
    load_strict(model, state, path, "dino.txt model")
    return model.eval()


# ------------------------------------------------------------------------------------------------ command-line flags
RELEASED = _NAME  # --model default
RELEASED_V3 = _V3_NAME


def add_dinotxt_args(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--backbone-weights``, ``--vision-head-weights``, ``--text-encoder-weights``, ``--weights``,
    ``--no-pretrained``, ``--vocab-path``."""
    parser.add_argument(
        "--model",
        default=RELEASED,
        help=f"{RELEASED} (the released DINOv2 model, default), {RELEASED_V3} (DINOv3's: its files are gated, give "
        "--weights and --backbone-weights) or a dino.txt file written by the dino.txt trainer",
    )
    parser.add_argument("--backbone-weights", help="local backbone file (default: the released backbone)")
    parser.add_argument("--vision-head-weights", help=f"local vision-head file of {RELEASED}")
    parser.add_argument("--text-encoder-weights", help=f"local text-encoder file of {RELEASED}")
    parser.add_argument("--weights", help=f"the vision-head-and-text-encoder file of {RELEASED_V3} (or its URL)")
    parser.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        help="download nothing: files not given locally stay randomly initialised",
    )
    parser.add_argument("--vocab-path", help="CLIP BPE vocabulary (default: the copy of an installed open_clip)")


def check_dinotxt_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (exit code 2) for local files that do not exist."""
    if args.model not in (RELEASED, RELEASED_V3) and not Path(args.model).expanduser().is_file():
        parser.error(f"--model {args.model!r}: neither {RELEASED}, {RELEASED_V3} nor an existing dino.txt file")
    for flag in ("backbone_weights", "vision_head_weights", "text_encoder_weights", "weights", "vocab_path"):
        value = getattr(args, flag)
        if value and not is_url(value) and not Path(value).expanduser().exists():
            parser.error(f"--{flag.replace('_', '-')} {value!r} does not exist")
    if args.model != RELEASED and (args.vision_head_weights or args.text_encoder_weights):
        parser.error(f"--vision-head-weights / --text-encoder-weights are for --model {RELEASED} (DINOv2's files)")
    if args.model != RELEASED_V3 and args.weights:
        parser.error(f"--weights is for --model {RELEASED_V3} (DINOv3's one file)")
    if args.model == RELEASED_V3 and args.pretrained and not (args.weights and args.backbone_weights):
        parser.error(
            f"--model {RELEASED_V3}: its files are gated behind the DINOv3 licence form "
            f"({catalog.DINOV3_LICENCE_URL}); pass --backbone-weights (the dinov3_vitl16 file) and --weights "
            f"({DINOV3_DINOTXT_FILE}), or --no-pretrained for random weights"
        )


def dinotxt_from_args(args: argparse.Namespace) -> tuple[DinoTxt, Tokenizer]:
    """The model (eval mode, CPU) and tokenizer the flags of :func:`add_dinotxt_args` name."""
    if args.model == RELEASED:
        model = dinov2_vitl14_reg4_dinotxt_tet1280d20h24l(
            pretrained=args.pretrained,
            backbone_weights=args.backbone_weights,
            vision_head_weights=args.vision_head_weights,
            text_encoder_weights=args.text_encoder_weights,
        )
    elif args.model == RELEASED_V3:
        return dinov3_vitl16_dinotxt_tet1280d20h24l(
            pretrained=args.pretrained,
            weights=args.weights or DINOTxtWeights.LVTD2300M,
            backbone_weights=args.backbone_weights or DINOv3Weights.LVD1689M,
            bpe_path_or_url=args.vocab_path or DINOV3_VOCAB_URL,
        )
    else:
        model = load_dinotxt(args.model, pretrained=args.pretrained, backbone_weights=args.backbone_weights)
    return model, _get_tokenizer(args.vocab_path)
