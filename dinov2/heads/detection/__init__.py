"""DINOv3's released detector: Plain-DETR (global-attention decoder, box reparameterisation) on a windowed ViT."""
