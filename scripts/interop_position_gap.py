"""How far timm / Hugging Face DINOv2 models drift from ours away from the stored 518 px grid, block by block.

    python scripts/interop_position_gap.py --model dinov2_vitg14 --resolution 224 [--peers timm hf]

Builds the hub backbone with its released random initialisation (seeded), converts the weights to each peer
(``to_timm_state_dict`` / ``to_hf_state_dict``; the peer is built on the meta device and takes our tensors, so
the model is held once), runs one image and prints, per block, the largest absolute difference of the patch
tokens (before the final norm) and the largest magnitude of ours. Both peers resize the position table by
output size with antialias; our plain backbones (as released) by scale factor with offset 0.1, no antialias.
Needs the ``bench`` extra (timm, transformers).
"""

from __future__ import annotations

import argparse
import time

import torch

from dinov2.hub import backbones
from dinov2.models.convert import to_hf_state_dict, to_timm_state_dict

TIMM_ARCH = {"vits": "vit_small", "vitb": "vit_base", "vitl": "vit_large", "vitg": "vit_giant"}


def timm_blocks(model, image: torch.Tensor) -> list[torch.Tensor]:
    import timm

    registers = model.num_register_tokens
    size = model.name.split("_")[1][:4]  # dinov2_vitg14[_reg] -> vitg
    name = f"{TIMM_ARCH[size]}_patch14{'_reg4' if registers else ''}_dinov2"
    with torch.device("meta"):
        peer = timm.create_model(name, pretrained=False, img_size=518, dynamic_img_size=True, init_values=1.0)
    peer.load_state_dict(to_timm_state_dict(model.state_dict()), strict=True, assign=True)
    tokens = peer.forward_intermediates(image, norm=False, output_fmt="NLC", intermediates_only=True)
    return list(tokens)  # [B, N, D] per block, prefix tokens dropped


def hf_blocks(model, image: torch.Tensor) -> list[torch.Tensor]:
    import transformers

    from dinov2.models.convert import hf_config

    config = hf_config(model)
    config_class = transformers.Dinov2WithRegistersConfig if model.num_register_tokens else transformers.Dinov2Config
    model_class = transformers.Dinov2WithRegistersModel if model.num_register_tokens else transformers.Dinov2Model
    kwargs = {k: v for k, v in config.items() if k not in ("architectures", "model_type", "dtype")}
    with torch.device("meta"):
        peer = model_class(config_class(**kwargs))
    peer.load_state_dict(to_hf_state_dict(model.state_dict()), strict=True, assign=True)
    hidden = peer.eval()(pixel_values=image, output_hidden_states=True).hidden_states[1:]
    return [h[:, 1 + model.num_register_tokens :] for h in hidden]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="dinov2_vitg14", choices=[n for n in dir(backbones) if n.startswith("dinov2_vit")]
    )
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--peers", nargs="+", default=["timm", "hf"], choices=["timm", "hf"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = getattr(backbones, args.model)(pretrained=False).eval()
    model.name = args.model
    image = torch.randn(1, 3, args.resolution, args.resolution, generator=torch.Generator().manual_seed(args.seed))
    with torch.inference_mode():
        ours = model.get_intermediate_layers(image, n=model.n_blocks, norm=False)
        gaps = {}
        for peer in args.peers:
            blocks = (timm_blocks if peer == "timm" else hf_blocks)(model, image)
            gaps[peer] = [(a - b).abs().max().item() for a, b in zip(blocks, ours, strict=True)]
    print(f"{args.model} (random init, seed {args.seed}) at {args.resolution} px, {time.perf_counter() - start:.0f} s")
    print(f"{'block':>5}  {'|ours| max':>10}  " + "  ".join(f"{'max |' + p + ' - ours|':>17}" for p in args.peers))
    for i, tokens in enumerate(ours):
        print(f"{i:>5}  {tokens.abs().max().item():>10.3f}  " + "  ".join(f"{gaps[p][i]:>17.2e}" for p in args.peers))


if __name__ == "__main__":
    main()
