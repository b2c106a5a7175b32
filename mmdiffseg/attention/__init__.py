"""The attention engine: reads Stable Diffusion's attention; knows nothing about masks."""
from .maps import AttentionMaps, CaptureRequest, CaptureSpec, merge_specs

__all__ = ['AttentionMaps', 'CaptureRequest', 'CaptureSpec', 'merge_specs']
