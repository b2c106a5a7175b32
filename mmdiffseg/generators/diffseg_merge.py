"""DiffSeg's proposal merging and refinement for a batch of images, with a host sync per pass
rather than per image (google/diffseg ``mask_merge`` iterations 1..N-1 and ``generate_masks``'
k-means; ALGORITHMS.md section 1).

The greedy merge visits the proposals in order; a proposal not yet merged becomes a *leader*,
averaged with every proposal within the threshold (merged ones included), which are then marked
merged. Proposal ``i`` is a leader iff no earlier leader is close to it, a recurrence whose unique
solution is the fixed point of ``L <- valid & not (L @ strictly_upper(close))``; iterated from
``L = valid`` it is exact on the first ``t`` proposals after ``t`` rounds and usually converges in a
few, so the device runs :data:`ROUNDS` rounds for all images at once and the host reads whether the
next one changes anything (and how many leaders each image has) in one transfer; with at most
:data:`ROUNDS` proposals per image, as many rounds as proposals are exact and need no check.
Every matrix product keeps the shapes of the image-by-image release, so the results are the same
bits.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..transfer import host_to_device
from .functional import kl_side, symmetric_kl
from .kmeans import kmeans_batch

__all__ = ['keep_matched', 'greedy_leaders', 'merge_proposals', 'merge_pass',
           'refine_proposals']

#: rounds of the leader recurrence run before the host checks for its fixed point
ROUNDS = 4


def _firsts(masks: torch.Tensor, counts: Sequence[int]) -> List[torch.Tensor]:
    """Per row of ``masks`` ``(B, K)``, the indices of its ``counts[b]`` True entries in order,
    without a host sync (one stable sort for the batch)."""
    order = torch.argsort((~masks).to(torch.uint8), dim=1, stable=True)
    return [order[b, :count] for b, count in enumerate(counts)]


def keep_matched(proposals: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Each image's proposals without the empty ones (anchors that matched no pixel in the
    released float16 pass), in order; one host sync for the batch. The images' proposals
    ``(A, D)`` come from the same anchors (same ``A``)."""
    if not proposals:
        return []
    keep = torch.stack([p.sum(1) for p in proposals]) > 0
    counts = keep.sum(1).tolist()
    return [p[first] for p, first in zip(proposals, _firsts(keep, counts))]


def greedy_leaders(close: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], List[int]]:
    """The leaders of the greedy merge of each image (``close``: ``(K_b, K_b)`` bool, row ``i``
    the proposals within the threshold of ``i``): their indices in order, and their numbers."""
    sizes = [c.shape[0] for c in close]
    k = max(sizes, default=0)
    if k == 0:
        return [c.new_zeros(0, dtype=torch.long) for c in close], [0] * len(close)
    device = close[0].device
    # leaders as 0/1 floats (B, 1, K): at first every proposal; padding is blocked throughout
    leaders, blocked = host_to_device([[[[1.0] * n + [0.0] * (k - n)] for n in sizes],
                                       [[[0.0] * n + [1.0] * (k - n)] for n in sizes]],
                                      device, torch.float32)
    padded = torch.stack([F.pad(c, (0, k - n, 0, k - n)) for c, n in zip(close, sizes)])
    earlier = padded.triu(diagonal=1).float()  # [j, i]: j < i and j's group takes i

    def step(leaders: torch.Tensor) -> torch.Tensor:
        return (torch.baddbmm(blocked, leaders, earlier) == 0).float()

    if k <= ROUNDS:  # exact on all k proposals after k rounds: nothing to check
        for _ in range(k):
            leaders = step(leaders)
        leaders = leaders.squeeze(1) > 0
        counts = leaders.sum(1).tolist()
        return _firsts(leaders, counts), counts
    while True:
        for _ in range(ROUNDS):
            leaders = step(leaders)
        after = step(leaders)
        status = torch.cat([(after == leaders).all(2), after.sum(2)], 1).tolist()
        leaders = after
        if all(done for done, _ in status):
            counts = [int(n) for _, n in status]
            return _firsts(leaders.squeeze(1) > 0, counts), counts


def merge_pass(proposals: Sequence[torch.Tensor], threshold: float) -> List[torch.Tensor]:
    """One greedy merging pass over each image's proposals ``(K_b, D)``: each leader's group
    averaged, in order."""
    if not proposals:
        return []
    # each proposal's float32 values, logs and entropy term, for all images at once
    sides = zip(*(part.split([len(p) for p in proposals]) for part in
                  kl_side(torch.cat(list(proposals)))))
    close = []
    for side in sides:
        within = symmetric_kl(side, side) < threshold
        close.append(within.fill_diagonal_(True))  # a proposal always matches itself
    merged = []
    for p, within, leaders in zip(proposals, close, greedy_leaders(close)[0]):
        groups = within[leaders].to(p)
        merged.append((groups @ p) / groups.sum(1, keepdim=True).clamp_min(1))
    return merged


def merge_proposals(proposals: torch.Tensor, threshold: float) -> torch.Tensor:
    """Merging iterations 1..N-1 for one image: in order, each proposal not yet merged is
    averaged with every proposal within ``threshold`` (merged ones included) and they are marked
    merged."""
    return merge_pass([proposals], threshold)[0]


def refine_proposals(attns: Sequence[torch.Tensor], proposals: Sequence[torch.Tensor]
                     ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """The released refinement: k-means of each image's pixel maps from its proposals, then the
    means of the final clusters. Returns per image the ``(K_b, D)`` means and which clusters have
    pixels (the release keeps those only)."""
    _, clusters = kmeans_batch(attns, proposals)
    means, kept = [], []
    for attn, p, labels in zip(attns, proposals, clusters):
        counts = labels.new_zeros(len(p)).scatter_add_(0, labels, torch.ones_like(labels))
        sums = torch.zeros_like(p).index_add_(0, labels, attn)
        means.append(sums / counts[:, None].clamp_min(1))
        kept.append(counts > 0)
    return means, kept
