"""Head-summed attention maps of one layer call, from Q, K and each query row's log-sum-exp.

The probabilities SDPA used are ``p_h = exp(q_h.k * scale - lse_h)`` (``scale = 1/sqrt(d)``, the
logits in float32 as every fused kernel forms them), so the maps need no output computation: for
each set of heads, ``sum_h p_h`` is added with each sink's weight (``1 / heads averaged``, see
:mod:`.capture`) into the float32 buffers. Two implementations:

* ``'triton'`` (:mod:`.map_kernel`): one fused kernel per head set; the default on CUDA.
* ``'torch'``: chunks of query rows, one matrix product giving the log2-scaled logits less each
  row's log2-sum-exp (``-lse * log2 e`` as one more column of ``q`` against a column of ones in
  ``k``: no separate pass adds it), ``exp2`` in place, a head sum; CPU, and CUDA without Triton.
  Chunks hold whole rows, so where no LSE is given (a mask, half precision on CPU, a backend
  without one) each chunk normalises its rows itself.

With an attention mask (SD has none) the torch path adds it to the logits, as SDPA does.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ..triton_support import note_kernels_unused, triton_problem

LOG2E = 1.4426950408889634
BACKENDS = ('auto', 'torch', 'triton')

#: bytes of float32 logits the torch path computes at once on CPU (whole query rows per chunk):
#: 32 MiB (400 query rows of a 64x64 SD 2 layer) keeps the matrix products efficient; 8 MiB made a
#: 64x64 layer's maps 1.4x slower (benchmarks/results/capture.md)
CPU_CHUNK_BYTES = 32 * 2 ** 20
#: on CUDA a quarter of the memory free for tensors, within these bounds
CUDA_CHUNK_BOUNDS = (16 * 2 ** 20, 2 ** 30)

#: ``(head indices, [(buffer, weight), ...])``: the sinks that average the same heads of a layer
Target = Tuple[torch.Tensor, List[Tuple[torch.Tensor, float]]]


def default_chunk_bytes(device) -> int:
    """Chunk budget of the torch path: fixed on CPU; on CUDA a quarter of the free memory (the
    driver's free memory plus what PyTorch's allocator holds unused), rounded down to a power of
    two, within :data:`CUDA_CHUNK_BOUNDS`."""
    device = torch.device(device)
    if device.type != 'cuda':
        return CPU_CHUNK_BYTES
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    low, high = CUDA_CHUNK_BOUNDS
    budget = int(min(high, max(low, free // 4)))
    # a power of two: a compiled U-Net guards on the budget, and recompiled at every other value
    return 1 << (budget.bit_length() - 1)


#: ``'module'`` -> :mod:`.map_kernel`, or None without triton, once looked up; ``'problem'``:
#: why there is none
_MAP_KERNEL: dict = {}


def _map_kernel():
    """The kernel module (imported at its first use), or None without triton (or with one that
    fails to import). A plain lookup after the first call: a U-Net under ``torch.compile`` calls
    it in its traced forward."""
    if 'module' not in _MAP_KERNEL:
        try:
            from . import map_kernel
        except ImportError:
            map_kernel = None
            _MAP_KERNEL['problem'] = 'the triton package is not installed (pip install triton)'
        except Exception as err:  # noqa: BLE001  a triton broken on import: no kernel
            map_kernel = None
            _MAP_KERNEL['problem'] = (f'the Triton kernels fail to import ({type(err).__name__}: '
                                      f'{err}); reinstall triton')
        _MAP_KERNEL['module'] = map_kernel
    return _MAP_KERNEL['module']


def resolve_backend(backend: str, device, masked: bool) -> str:
    """``'auto'`` -> ``'triton'`` on a CUDA GPU the kernels run on
    (:func:`mmdiffseg.triton_support.triton_problem`), else ``'torch'``; a masked layer always
    takes the torch path. ``device=None`` checks only what needs no device (before a U-Net call).

    Raises:
        ValueError: an unknown backend, or ``'triton'`` where the kernels cannot run.
    """
    if backend not in BACKENDS:
        raise ValueError(f'map_backend must be one of {BACKENDS}, got {backend!r}')
    cuda = device is not None and torch.device(device).type == 'cuda'
    if masked or backend == 'torch' or (backend == 'auto' and device is not None and not cuda):
        return 'torch'   # (no kernel import on the CPU: a broken triton costs nothing there)
    if _map_kernel() is None:
        problem = _MAP_KERNEL.get('problem', 'the triton package is not installed '
                                  '(pip install triton)')
    else:
        problem = None if device is None else triton_problem(device)
    if backend == 'auto':
        if cuda and problem is not None:
            note_kernels_unused(problem)
        return 'triton' if cuda and problem is None else 'torch'
    if problem is not None:
        raise ValueError(f"map_backend='triton' cannot run here: {problem}; use "
                         "map_backend='torch' or 'auto'")
    return 'triton'


def add_head_maps(query: torch.Tensor, key: torch.Tensor, lse: Optional[torch.Tensor],
                  mask: Optional[torch.Tensor], targets: Sequence[Target], *, backend: str = 'auto',
                  chunk_bytes: Optional[int] = None,
                  scratch: Callable[..., torch.Tensor]) -> None:
    """Add each target's weighted head sums of ``softmax(q.k / sqrt(d) + mask)`` into its buffers.

    Args:
        query, key: ``(B, H, N, d)``, ``(B, H, K, d)`` (the captured batch rows only).
        lse: ``(B, H, N)`` row log-sum-exp from the fused op, or ``None``.
        mask: additive mask broadcastable to ``(B, H, N, K)``, or ``None``.
        targets: per head set, the head indices (int64, on the device) and ``(buffer, weight)``.
        scratch: ``scratch(slot, numel, dtype, device)`` -> a reusable flat tensor.
    """
    backend = resolve_backend(backend, query.device, mask is not None)
    add_resolved(query, key, lse, mask, targets, backend, chunk_bytes, scratch)


def add_resolved(query, key, lse, mask, targets: Sequence[Target], backend: str,
                 chunk_bytes: Optional[int], scratch: Callable[..., torch.Tensor]) -> None:
    """:func:`add_head_maps` on a backend :func:`resolve_backend` chose (``'torch'`` or
    ``'triton'``): a capture session resolves it once, not at every layer."""
    scale = 1.0 / math.sqrt(query.shape[-1])
    if backend == 'triton':
        kernel = _map_kernel()
        if lse is None:
            lse = kernel.row_lse(query, key, scale)
        kernel.add_head_maps(query, key, lse, scale, targets, scratch)
        return
    chunk_bytes = chunk_bytes or default_chunk_bytes(query.device)
    heads = query.shape[1]
    for index, sinks in targets:
        every = index.numel() == heads  # head lists hold distinct heads (CaptureRequest)
        _add_torch(*(t if t is None or every or t.shape[1] == 1 else t.index_select(1, index)
                     for t in (query, key, lse, mask)), scale, sinks, chunk_bytes, scratch)


def _add_torch(query, key, lse, mask, scale, sinks, chunk_bytes, scratch) -> None:
    """The torch path for one head set (``query`` etc. already restricted to it)."""
    batch, heads, n_query, _ = query.shape
    n_key, rows, device = key.shape[2], batch * heads, query.device
    q3, k3t = _logit_factors(query, key, lse, scale, scratch)
    mask2 = None if mask is None else mask.float() * LOG2E
    chunk = min(n_query, max(1, chunk_bytes // (4 * rows * n_key)))
    logits_ws = scratch('logits', rows * chunk * n_key, torch.float32, device)
    sum_ws = (scratch('head_sum', batch * chunk * n_key, torch.float32, device) if heads > 1
              else None)
    for start in range(0, n_query, chunk):
        end = min(start + chunk, n_query)
        size = (end - start) * n_key
        logits = logits_ws[:rows * size].view(rows, -1, n_key)
        torch.bmm(q3[:, start:end], k3t, out=logits)
        per_head = logits.view(batch, heads, -1, n_key)
        if mask2 is not None:
            per_head.add_(mask2[:, :, start:end] if mask2.shape[2] > 1 else mask2)
        if lse is None:
            logits.sub_(logits.amax(dim=-1, keepdim=True))
        logits.exp2_()
        if lse is None:
            logits.div_(logits.sum(dim=-1, keepdim=True))
        summed = per_head[:, 0] if heads == 1 else torch.sum(
            per_head, dim=1, out=sum_ws[:batch * size].view(batch, -1, n_key))
        for buffer, weight in sinks:
            buffer[:, start:end].add_(summed, alpha=weight)


def _logit_factors(query, key, lse, scale, scratch) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(q, k^T)``, ``(rows, N, w)`` and ``(rows, w, K)`` float32 (in scratch), whose product is
    the logits times ``log2 e`` less, where ``lse`` is given, each row's ``lse * log2 e``: ``q``
    gains the column ``-lse * log2 e`` and ``k`` a column of ones, so the product is ``log2 p`` at
    once (a bias added by ``baddbmm`` cost one more pass over the logits: a fifth of the maps' CPU
    time)."""
    batch, heads, n_query, head_dim = query.shape
    rows, n_key, width = batch * heads, key.shape[2], head_dim + (lse is not None)
    q3 = scratch('q_factor', rows * n_query * width, torch.float32, query.device)
    q3 = q3.view(rows, n_query, width)
    q3[..., :head_dim].copy_(query.reshape(rows, n_query, head_dim)).mul_(scale * LOG2E)
    if lse is None:
        return q3, key.float().reshape(rows, n_key, head_dim).transpose(1, 2)
    k3 = scratch('k_factor', rows * n_key * width, torch.float32, key.device)
    k3 = k3.view(rows, n_key, width)
    torch.mul(lse.reshape(rows, n_query), -LOG2E, out=q3[..., head_dim])
    k3[..., :head_dim] = key.reshape(rows, n_key, head_dim)
    k3[..., head_dim] = 1.0
    return q3, k3.transpose(1, 2)
