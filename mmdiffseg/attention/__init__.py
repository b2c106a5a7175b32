"""The attention engine: reads Stable Diffusion's attention; knows nothing about masks."""
from .capture import capture_attention
from .engine import DiffusionAttentionEngine
from .images import preprocess_images
from .maps import AttentionMaps, CaptureRequest, CaptureSpec, merge_specs
from .prompts import encode_prompts, enhance_class_tokens, token_positions
from .unet_layers import unet_attention_layers

__all__ = ['AttentionMaps', 'CaptureRequest', 'CaptureSpec', 'merge_specs',
           'DiffusionAttentionEngine', 'preprocess_images', 'capture_attention',
           'unet_attention_layers', 'encode_prompts', 'enhance_class_tokens',
           'token_positions']
