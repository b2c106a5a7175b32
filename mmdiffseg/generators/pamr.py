"""Pixel-adaptive mask refinement (PAMR), as SeeDiff applies it to its binary mask.

PAMR (Araslanov & Roth, CVPR 2020, Sec. 3.2) propagates a mask along image edges. For every pixel
``i`` and each neighbour ``j`` among the 8 of the 3x3 window at every dilation ``d``:

    a_ij = -|I_i - I_j| / (1e-8 + factor * sigma_i)      per image channel, then the channel mean
    w_ij = softmax_j(a_ij)                               over all neighbours of all dilations
    m_i <- sum_j w_ij m_j                                iterated; replicate padding at the border

``sigma_i`` is the (unbiased) standard deviation of the image values in pixel ``i``'s windows: the
released module (SeeDiff ``src/pamr.py``, copied from the original PAMR) stacks the 9 values of the
3x3 window at every dilation and takes one standard deviation over them, per channel. With
SeeDiff's single dilation this is the std of the 3x3 window including its centre.

Defaults are SeeDiff's (ALGORITHMS.md 2.3 step 6): ``num_iter=5000``, ``dilations=(1,)``,
``sigma_factor=0.2``; the original PAMR uses ``dilations=(1, 2, 4, 8, 12, 24)``,
``sigma_factor=0.1``, ``num_iter=10`` (:data:`ORIGINAL_PAMR`).

The affinity is computed once. Propagation backends (``backend``), equal within float32 rounding:

* ``'torch'``: each step is 8 * len(dilations) fused multiply-adds on shifted views of one padded
  buffer plus a border refresh (no unfold, no convolution, no allocation); the CPU path.
* ``'graph'``: the same steps recorded once into CUDA graphs and replayed (no per-step host
  launches; the GPU still runs ~13 small kernels a step).
* ``'triton'``: :mod:`~mmdiffseg.generators.pamr_triton`, up to ``steps_per_launch`` steps in one
  fused kernel launch (the CUDA default when Triton is installed).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..cuda_graphs import record_graph
from ..options import check_real, check_whole, check_wholes
from ..triton_support import auto_takes_triton, on_device_of, triton_problem

__all__ = ['PAMR', 'ORIGINAL_PAMR', 'BACKENDS', 'run_in_chunks']

#: the settings of the original PAMR paper, for ``PAMR(**ORIGINAL_PAMR)``
ORIGINAL_PAMR = dict(num_iter=10, dilations=(1, 2, 4, 8, 12, 24), sigma_factor=0.1)

BACKENDS = ('auto', 'torch', 'graph', 'triton')
#: steps per recorded CUDA graph (``backend='graph'``): ~13 kernels a step
GRAPH_STEPS = 100

_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def _shifted_views(padded: torch.Tensor, pad: int, size, offsets):
    """Views of ``padded`` (padded by ``pad`` on each side) shifted by each ``(dy, dx)``."""
    h, w = size
    return [padded[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w] for dy, dx in offsets]


def _replicate_border(padded: torch.Tensor, pad: int) -> None:
    """Refill the ``pad``-wide border of ``padded`` from its interior's edge pixels, in place."""
    padded[..., pad:-pad, :pad] = padded[..., pad:-pad, pad:pad + 1]
    padded[..., pad:-pad, -pad:] = padded[..., pad:-pad, -pad - 1:-pad]
    padded[..., :pad, :] = padded[..., pad:pad + 1, :]
    padded[..., -pad:, :] = padded[..., -pad - 1:-pad, :]


def run_in_chunks(advance: Callable[[int, bool], Optional[torch.Tensor]], num_iter: int,
                  limit: int, tol: Optional[float], check_every: int) -> None:
    """Drive ``num_iter`` steps as ``advance(n, measure)`` calls of at most ``limit`` steps.

    Chunks end at every ``check_every``-th step when ``tol`` is set; there ``advance`` is asked to
    ``measure`` and returns its last step's largest change (a 0-dim tensor), and the run stops
    when that is below ``tol``: the same steps on every backend.
    """
    done = 0
    while done < num_iter:
        n = min(limit, num_iter - done)
        if tol is not None:
            n = min(n, check_every - done % check_every)
        done += n
        measure = tol is not None and done % check_every == 0
        change = advance(n, measure)
        if measure and change.item() < tol:
            break


class _ShiftedSteps:
    """The PyTorch propagation: the mask lives inside one replicate-padded buffer that the shifted
    views read; each step writes the new mask into the buffer's interior and refreshes its border
    (no allocation, so the steps can also be recorded into a CUDA graph)."""

    def __init__(self, weights: torch.Tensor, mask: torch.Tensor, pad: int, offsets):
        h, w = mask.shape[-2:]
        self.pad = pad
        self.padded = F.pad(mask, [pad] * 4, mode='replicate')
        self.inner = self.padded[..., pad:pad + h, pad:pad + w]
        self.views = _shifted_views(self.padded, pad, (h, w), offsets)
        self.taps = weights.unbind(dim=2)
        self.new = torch.empty_like(mask)

    def advance(self, n: int, measure: bool = False) -> Optional[torch.Tensor]:
        """``n`` steps; with ``measure`` the last step's ``max |m_new - m_old|``."""
        change = None
        for step in range(n):
            torch.mul(self.views[0], self.taps[0], out=self.new)
            for view, tap in zip(self.views[1:], self.taps[1:]):
                self.new.addcmul_(view, tap)
            if measure and step == n - 1:
                change = (self.new - self.inner).abs().max()
            self.inner.copy_(self.new)
            _replicate_border(self.padded, self.pad)
        return change


class _GraphedSteps:
    """``_ShiftedSteps.advance(n, measure)`` recorded once per ``(n, measure)`` into a CUDA graph
    (``torch.cuda.graph``) and replayed; the graphs live as long as this object."""

    def __init__(self, steps: _ShiftedSteps):
        self.steps = steps
        self.graphs = {}

    def __call__(self, n: int, measure: bool) -> Optional[torch.Tensor]:
        if (n, measure) not in self.graphs:
            self.graphs[n, measure] = self._record(n, measure)
        graph, change = self.graphs[n, measure]
        graph.replay()
        return change

    def _record(self, n: int, measure: bool):
        # one warm-up step (kernels loaded before capture), undone; the capture runs nothing
        state = self.steps.padded.clone()
        graph, _, change = record_graph(lambda: self.steps.advance(1, measure),
                                        lambda: self.steps.advance(n, measure))
        self.steps.padded.copy_(state)
        return graph, change


class PAMR(torch.nn.Module):
    """Refine masks ``(B, C, H, W)`` along the edges of images ``(B, K, H, W)``.

    Args:
        num_iter: propagation steps (SeeDiff: 5000).
        dilations: window dilations; each adds its 8 neighbours.
        sigma_factor: the factor in front of the local std in the affinity (SeeDiff 0.2, PAMR 0.1).
        tol: early stop: stop as soon as ``max |m_{t+1} - m_t| < tol`` (checked every
            ``check_every`` steps, on the whole batch). The update averages with fixed weights
            that sum to one, so the per-step change never grows: every skipped step would have
            moved each value by less than ``tol``, and the result differs from the full
            ``num_iter`` run only by the small remainder of a converging sequence (at most
            ``tol`` per skipped step). ``None`` (default) runs exactly ``num_iter`` steps, as
            released.
        check_every: how often the ``tol`` test runs (a device sync on GPU).
        backend: ``'auto'`` (``'triton'`` on CUDA where the kernel runs: Triton installed,
            compute capability 8.0+; ``'graph'`` on other CUDA GPUs, ``'torch'`` elsewhere), or
            one of ``'torch'``, ``'graph'`` (CUDA), ``'triton'`` (CUDA, or CPU under
            ``TRITON_INTERPRET=1``): see the module docstring.
        steps_per_launch: ``'triton'``: at most this many steps per kernel launch (see
            :func:`~mmdiffseg.generators.pamr_triton.launch_plan`).
    """

    def __init__(self, num_iter: int = 5000, dilations: Sequence[int] = (1,),
                 sigma_factor: float = 0.2, tol: Optional[float] = None, check_every: int = 10,
                 backend: str = 'auto', steps_per_launch: int = 8):
        super().__init__()
        self.num_iter = check_whole('PAMR', 'num_iter', num_iter, low=0)
        self.dilations = check_wholes('PAMR', 'dilations', dilations, '[1,2]', low=1)
        if not self.dilations:
            raise ValueError('PAMR: dilations must name at least one dilation, e.g. [1]')
        self.sigma_factor = check_real('PAMR', 'sigma_factor', sigma_factor, low=0, low_open=True)
        self.tol = None if tol is None else check_real('PAMR', 'tol', tol, low=0)
        self.check_every = check_whole('PAMR', 'check_every', check_every, low=1)
        if backend not in BACKENDS:
            raise ValueError(f'PAMR: backend must be one of {BACKENDS}, got {backend!r}')
        self.steps_per_launch = check_whole('PAMR', 'steps_per_launch', steps_per_launch, low=1)
        self.backend = backend
        self.offsets = tuple((dy * d, dx * d) for d in self.dilations for dy, dx in _NEIGHBOURS)
        self.pad = max(self.dilations)

    def affinity(self, image: torch.Tensor) -> torch.Tensor:
        """Neighbour weights ``w_ij`` ``(B, 1, P, H, W)`` (``P = 8 * len(dilations)``, sum 1 over
        P): the module docstring's ``a_ij`` with the released window standard deviation, mean
        over the channels, softmax over the neighbours (PAMR Sec. 3.2)."""
        image = image.float()
        neighbours = _shifted_views(F.pad(image, [self.pad] * 4, mode='replicate'), self.pad,
                                    image.shape[-2:], self.offsets)
        taps = neighbours + [image] * len(self.dilations)  # the centre is in every window
        mean = sum(taps) / len(taps)
        sigma = (sum((t - mean).square() for t in taps) / (len(taps) - 1)).sqrt()
        scale = 1e-8 + self.sigma_factor * sigma
        logits = torch.stack([(-(n - image).abs() / scale).mean(dim=1) for n in neighbours], 1)
        return logits.softmax(dim=1).unsqueeze(1)

    def backend_for(self, device: torch.device) -> str:
        """The backend that runs on ``device`` (resolves ``'auto'``; a clear error for a backend
        that cannot run there)."""
        if self.backend == 'auto':
            if device.type != 'cuda':
                return 'torch'
            return 'triton' if auto_takes_triton(device) else 'graph'
        problem = triton_problem(device)
        if self.backend == 'triton' and problem is not None:
            raise ValueError(f"PAMR(backend='triton') cannot run here: {problem}; use "
                             "backend='auto' or 'torch'")
        if self.backend == 'graph' and device.type != 'cuda':
            raise ValueError(f"PAMR(backend='graph') needs CUDA tensors, got {device}; use "
                             "backend='auto' or 'torch'")
        return self.backend

    def propagate(self, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``num_iter`` steps of ``m <- sum_j w_j m_j`` with precomputed ``weights``
        ``(B, 1, P, H, W)``, on :meth:`backend_for` the mask's device."""
        backend = self.backend_for(mask.device)
        if backend == 'triton':
            from .pamr_triton import fused_propagate
            return fused_propagate(weights.flatten(1, 2), mask, self.dilations, self.num_iter,
                                   self.tol, self.check_every, self.steps_per_launch)
        steps = _ShiftedSteps(weights, mask, self.pad, self.offsets)
        if backend == 'graph':
            with on_device_of(mask):
                run_in_chunks(_GraphedSteps(steps), self.num_iter, GRAPH_STEPS, self.tol,
                              self.check_every)
        else:
            run_in_chunks(steps.advance, self.num_iter, self.num_iter, self.tol, self.check_every)
        return steps.inner.clone()

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Refined masks, float32 ``(B, C, H, W)``.

        Args:
            image: ``(B, K, H, W)`` (SeeDiff: RGB in 0..255, float or uint8).
            mask: ``(B, C, H, W)`` at the image's size (SeeDiff: the binary mask as float).
        """
        if image.dim() != 4 or mask.dim() != 4:
            raise ValueError(f'PAMR expects image (B, K, H, W) and mask (B, C, H, W), got '
                             f'{tuple(image.shape)} and {tuple(mask.shape)}')
        if image.shape[0] != mask.shape[0] or image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f'PAMR: image {tuple(image.shape)} and mask {tuple(mask.shape)} '
                             'must share batch size and spatial size')
        with torch.no_grad():
            weights = self.affinity(image)
            return self.propagate(weights, mask.float())

    def extra_repr(self) -> str:
        return (f'num_iter={self.num_iter}, dilations={self.dilations}, '
                f'sigma_factor={self.sigma_factor}, tol={self.tol}, backend={self.backend!r}')
