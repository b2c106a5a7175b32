"""Prompts: templates, where each class name sits among the prompt's tokens, text embeddings.

Token positions index the tokenizer's padded sequence (BOS = 0), the columns of a cross-attention
map. A class name may span several tokens ("potted plant", "tv monitor", "dining table"); its
positions are those of the first occurrence of its token sequence in the prompt.

Category-enhanced embeddings implement iSeg's Cat-Cross (ALGORITHMS.md 3.3, released
``wsss/iSeg.py:test_step``): the text encoder's OUTPUT embeddings at the class tokens are
multiplied by a factor (1.6) before they condition the U-Net.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import torch

from ..transfer import host_to_device

def prompt_token_ids(tokenizer, prompt: str) -> List[int]:
    """The prompt's token ids as the U-Net sees them before padding (BOS ... EOS), truncated."""
    return tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids


def _occurrences(sequence: Sequence[int], pattern: Sequence[int]) -> List[int]:
    """Start indices of ``pattern`` in ``sequence``, in order."""
    n, pattern = len(pattern), list(pattern)
    return [s for s in range(len(sequence) - n + 1) if list(sequence[s:s + n]) == pattern]


def _missing_class(tokenizer, prompt: str, name: str, pattern: List[int],
                   ids: List[int]) -> ValueError:
    """The error of a class whose tokens are not among the prompt's (truncated) tokens."""
    limit = tokenizer.model_max_length
    full = tokenizer(prompt.lower(), verbose=False).input_ids
    if len(full) > limit and _occurrences(full, pattern):
        return ValueError(
            f'class {name!r} lies beyond the first {limit} tokens of its prompt ({len(full)} '
            f'tokens), which is all the text encoder reads: {prompt[:200]!r}...; name fewer '
            'classes per image or use a shorter prompt template')
    return ValueError(
        f'class {name!r} (tokens {pattern}) does not occur in prompt {prompt!r} (tokens {ids}, at '
        f'most {limit}); the prompt must contain the class name as written, e.g. '
        '"a photo of a {}".format(name)')


def token_positions(tokenizer, prompt: str, class_names: Sequence[str]) -> Dict[str, List[int]]:
    """Positions of each class name's tokens in ``prompt`` (BOS = 0), case-insensitive: the
    first occurrence outside the tokens of the longer names (``'dog'`` after ``'hot dog'`` is
    the standalone word), else the first.

    Raises:
        ValueError: a class name is empty or its tokens do not occur in the (possibly truncated)
            prompt, or only within a longer name's there while the whole prompt has them past
            the token limit; the message names the class and the prompt.
    """
    ids = prompt_token_ids(tokenizer, prompt.lower())
    patterns = {name: tokenizer(name.lower(), add_special_tokens=False).input_ids
                for name in class_names}
    placed: Dict[tuple, List[int]] = {}  # token sequence -> its positions
    for name in sorted(patterns, key=lambda n: -len(patterns[n])):  # stable: longer names first
        pattern = tuple(patterns[name])
        if not pattern:
            raise ValueError(f'class name {name!r} has no tokens (prompt {prompt!r})')
        if pattern in placed:  # the same words in another case
            continue
        starts = _occurrences(ids, pattern)
        if not starts:
            raise _missing_class(tokenizer, prompt, name, list(pattern), ids)
        taken = {i for idx in placed.values() for i in idx}
        free = [s for s in starts if taken.isdisjoint(range(s, s + len(pattern)))]
        if not free and len(_occurrences(tokenizer(prompt.lower(), verbose=False).input_ids,
                                         pattern)) > len(starts):
            # its own words were cut off at the token limit: not a longer name's ('screen' of
            # 'screen door')
            raise _missing_class(tokenizer, prompt, name, list(pattern), ids)
        placed[pattern] = list(range((free or starts)[0], (free or starts)[0] + len(pattern)))
    return {name: list(placed[tuple(pattern)]) for name, pattern in patterns.items()}


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: Sequence[str]) -> torch.Tensor:
    """CLIP text-encoder output ``(B, 77, D)`` for ``prompts``, padded to the tokenizer's length,
    as Stable Diffusion pipelines condition the U-Net (last hidden state, no attention mask).

    Each distinct prompt is encoded once (a DiffSeg batch is ``B`` empty prompts: one encoder row,
    not ``B``); every row is the encoder's output for its prompt."""
    distinct = list(dict.fromkeys(prompts))
    tokens = tokenizer(distinct, padding='max_length', max_length=tokenizer.model_max_length,
                       truncation=True, return_tensors='pt')
    device = text_encoder.device
    ids = host_to_device(tokens.input_ids, device)
    use_mask = getattr(text_encoder.config, 'use_attention_mask', False)
    mask = host_to_device(tokens.attention_mask, device) if use_mask else None
    rows = {prompt: i for i, prompt in enumerate(distinct)}
    order = None if len(distinct) == len(prompts) else host_to_device(
        [rows[p] for p in prompts], device)
    encoded = text_encoder(ids, attention_mask=mask)[0]
    return encoded if order is None else encoded[order]


def selected_tokens(name: str, positions: Sequence[int],
                    token_offsets: Optional[Mapping[str, Sequence[int]]] = None) -> List[int]:
    """The token ``positions`` of class ``name``, or those at its ``token_offsets`` (offsets
    within the class's tokens, iSeg: ``'potted plant': [1]``)."""
    positions = list(positions)
    if not token_offsets or name not in token_offsets:
        return positions
    offsets = list(token_offsets[name])
    if not all(0 <= o < len(positions) for o in offsets):  # a negative one would count back
        raise ValueError(f'token_offsets[{name!r}] = {offsets} but {name!r} has only '
                         f'{len(positions)} token(s): pass offsets in 0..{len(positions) - 1}')
    return [positions[o] for o in offsets]


def enhance_class_tokens(embeddings: torch.Tensor, positions: Sequence[Mapping[str, Sequence[int]]],
                         factor: float,
                         token_offsets: Optional[Mapping[str, Sequence[int]]] = None) -> torch.Tensor:
    """iSeg's Cat-Cross: scale the text embeddings at the class-token positions by ``factor``.

    Args:
        embeddings: ``(B, T, D)`` text-encoder output.
        positions: per sample, class name -> token positions (:func:`token_positions`).
        factor: multiplier (iSeg: 1.6); 1 returns ``embeddings`` unchanged.
        token_offsets: class name -> offsets within the class's tokens to enhance (iSeg:
            ``'potted plant': [1]``); other classes enhance all their tokens.
    """
    if factor == 1.0:
        return embeddings
    scale = torch.ones(embeddings.shape[:2])  # on the host, copied without a sync below
    for b, sample in enumerate(positions):
        for name, idx in sample.items():
            scale[b, selected_tokens(name, idx, token_offsets)] = factor
    # in float32, rounded once to the embeddings' dtype, as the release's in-place `*= 1.6` on
    # float16 embeddings (a float16 factor would be 1.599609375)
    scale = host_to_device(scale, embeddings.device, torch.float32)[..., None]
    return (embeddings.float() * scale).to(embeddings.dtype)
