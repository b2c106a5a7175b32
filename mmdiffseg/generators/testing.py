"""Attention maps with a known answer, built from a label map (tests and benchmarks).

Self-attention: each segment gets a random unit feature, every token the feature of its segment plus
Gaussian noise of std ``noise`` (drawn separately for its query and its key role); a row is
``softmax(q . k / temperature)`` over keys, so rows
concentrate on keys of the query's own segment as the noise goes to zero (the structure DiffSeg and
iSeg rely on). Cross-attention: a begin-of-text token holding most of the mass, as in Stable
Diffusion, plus one token per present class name (two for names with a space) whose logit is raised
by ``cross_strength`` on that class's pixels, with the same noise; rows are softmax over the tokens.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..attention.maps import AttentionMaps

NUM_TOKENS = 77


def _labels_at(labels: torch.Tensor, r: int) -> torch.Tensor:
    """Nearest-neighbour resize of ``(B, H, W)`` labels to ``(B, r*r)``."""
    small = F.interpolate(labels[:, None].float(), size=(r, r), mode='nearest')
    return small[:, 0].long().flatten(1)


def _prompt_tokens(names: Sequence[str]) -> Tuple[str, dict]:
    """A prompt naming the classes and each name's token positions (1 token per word)."""
    positions, words, cursor = {}, ['a', 'photo', 'of'], 4
    for i, name in enumerate(names):
        if i:
            words.append('and')
            cursor += 1
        n_tokens = len(name.split())
        positions[name] = list(range(cursor, cursor + n_tokens))
        words.append(name)
        cursor += n_tokens
    return ' '.join(words), positions


def attention_from_labels(labels: torch.Tensor, classes: Sequence[str], noise: float = 0.3,
                          self_resolutions: Sequence[int] = (64, 32, 16, 8),
                          cross_resolutions: Sequence[int] = (64, 32, 16, 8),
                          temperature: float = 0.1, cross_strength: float = 4.0,
                          feature_dim: int = 32, ignore_index: int = 255,
                          seed: int = 0) -> Tuple[AttentionMaps, List[List[str]]]:
    """Build :class:`AttentionMaps` whose structure is given by ``labels``.

    Args:
        labels: ``(B, H, W)`` class indices into ``classes``; ``ignore_index`` pixels get
            unstructured (noise-only) features and no class token.
        classes: class names; a class named ``'background'`` gets no token in the prompt.
        noise: std of the Gaussian noise added to token features and to cross-attention logits.

    Returns:
        ``(maps, class_names)``: maps keyed ``self{r}`` / ``cross{r}`` as the engine names them
        (``image_size`` = the labels' size), and per sample the present class names (the ones
        with tokens).
    """
    gen = torch.Generator().manual_seed(seed)
    labels = labels.long()
    b = labels.shape[0]
    n_ids = max(len(classes), ignore_index + 1)
    feats = F.normalize(torch.randn(b, n_ids, feature_dim, generator=gen), dim=-1)
    class_names, prompts, positions = [], [], []
    for i in range(b):
        present = [int(c) for c in labels[i].unique() if int(c) != ignore_index
                   and classes[int(c)] != 'background']
        names = [classes[c] for c in present]
        prompt, pos = _prompt_tokens(names)
        class_names.append(names)
        prompts.append(prompt)
        positions.append(pos)

    maps = {}
    for r in sorted(set(self_resolutions) | set(cross_resolutions), reverse=True):
        ids = _labels_at(labels, r)
        tok = torch.gather(feats, 1, ids[..., None].expand(-1, -1, feature_dim))
        unstructured = (ids == ignore_index)[..., None]
        tok = torch.where(unstructured, torch.zeros_like(tok), tok)
        if r in self_resolutions:
            # independent noise on the query and key sides, so a token's logit with itself
            # carries no extra noise^2 * feature_dim term
            query = tok + noise * torch.randn(tok.shape, generator=gen)
            key = tok + noise * torch.randn(tok.shape, generator=gen)
            maps[f'self{r}'] = torch.softmax(query @ key.transpose(1, 2) / temperature, dim=-1)
        if r in cross_resolutions:
            logits = noise * torch.randn(b, r * r, NUM_TOKENS, generator=gen)
            logits[..., 0] += cross_strength + 2.0  # begin-of-text sink, as in SD
            for i in range(b):
                for name, token_ids in positions[i].items():
                    on_class = (ids[i] == classes.index(name)).float()
                    logits[i][:, token_ids] += cross_strength * on_class[:, None]
            maps[f'cross{r}'] = torch.softmax(logits, dim=-1)
    attn = AttentionMaps(maps=maps, prompts=prompts, token_positions=positions,
                         image_size=tuple(labels.shape[-2:]))
    return attn, class_names


def load_label_png(path, size: Optional[int] = 512) -> torch.Tensor:
    """A palette/index PNG as ``(H, W)`` int64 (nearest-resized to ``size`` square when given)."""
    import numpy as np
    from PIL import Image

    img = Image.open(path)
    if size is not None:
        img = img.resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.array(img).astype('int64'))
