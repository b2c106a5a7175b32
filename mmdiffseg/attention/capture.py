"""Capture averaged attention probabilities from a diffusers U-Net while it runs.

Fused attention (SDPA, xFormers) never materialises the probabilities (ALGORITHMS.md 6.1). The
layers a :class:`~mmdiffseg.attention.maps.CaptureSpec` needs get a :class:`CaptureProcessor` that
computes the layer's output with the same SDPA call as diffusers' ``AttnProcessor2_0`` (so the U-Net
output and its speed do not depend on what is captured), takes each query row's log-sum-exp from
the fused kernel (:mod:`.sdpa_lse`), and adds ``exp(q.k / sqrt(d) - lse)`` to float32 buffers on
the fly (:mod:`.head_maps`: a fused Triton kernel on CUDA, query-row chunks in PyTorch elsewhere):
mean over the requested heads, over the request's layers (unless ``per_layer``) and over the
captured denoising steps, only for the conditional half of a classifier-free-guidance batch
``[uncond, cond]`` (ALGORITHMS.md 6.3). Large layer-averaged maps on the Triton path are added
once per forward for all their layers (:mod:`.deferred_maps`). No ``(B*heads, N, N)`` tensor is
ever held. Logits are float32 whatever the model dtype (what ``upcast_attention`` asks for, and
what the fused kernels do). Every other layer keeps its own processor; :func:`capture_attention`
restores the original processors on exit.

The U-Net's layers and their token grids come from :mod:`.unet_layers`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ..transfer import host_to_device
from . import deferred_maps
from .capture_threads import captured_by_this_thread
from .head_maps import add_resolved, default_chunk_bytes, resolve_backend
from .maps import CaptureRequest, CaptureSpec
from .sdpa_lse import sdpa_with_lse
from .unet_layers import (AttentionLayer, attention_modules, compiled, replaceable_processor,
                          unet_attention_layers)


@dataclass
class _Sink:
    """Where one layer's probabilities go for one request."""

    request: str
    heads: Optional[Tuple[int, ...]]  # local head indices, None = all heads
    weight: float
    slot: Optional[int]  # per-layer index, None = averaged over layers


def _plan_request(request: CaptureRequest, layers: Sequence[AttentionLayer]) -> Dict[str, _Sink]:
    """Layer name -> sink for one request; clear errors for unknown layers, resolutions, heads."""
    of_kind = [l for l in layers if l.kind == request.kind]
    valid_res = sorted({l.resolution for l in of_kind}, reverse=True)
    at_res = [l for l in of_kind if l.resolution == request.resolution]
    if not at_res:
        raise ValueError(f'CaptureRequest {request.name!r}: no {request.kind}-attention layer at '
                         f'resolution {request.resolution} for this input; valid resolutions: '
                         f'{valid_res}')
    if request.layers is not None:
        by_name = {l.name: l for l in at_res}
        unknown = [n for n in request.layers if n not in by_name]
        if unknown:
            raise ValueError(f'CaptureRequest {request.name!r}: unknown layer(s) {unknown} for '
                             f'{request.kind} attention at resolution {request.resolution}; valid '
                             f'layers: {[l.name for l in at_res]}')
        if len(set(request.layers)) != len(request.layers):
            raise ValueError(f'CaptureRequest {request.name!r}: layer listed twice in {request.layers}')
        at_res = [l for l in at_res if l.name in set(request.layers)]  # forward order
    offsets, total = [], 0
    for layer in at_res:
        offsets.append(total)
        total += layer.heads
    if request.heads is not None:
        bad = [h for h in request.heads if not 0 <= h < total]
        if bad or not request.heads:
            raise ValueError(f'CaptureRequest {request.name!r}: head indices {bad or "[]"} out of range; '
                             f'the {len(at_res)} selected layer(s) have {total} heads in all '
                             f'(indices 0..{total - 1}, layer-major in forward order)'
                             + (f'; fix: {request.heads_fix}' if request.heads_fix else ''))
    plan = {}
    for slot, (layer, start) in enumerate(zip(at_res, offsets)):
        if request.heads is None:
            heads, n_mean = None, layer.heads * (1 if request.per_layer else len(at_res))
        else:
            local = [h - start for h in request.heads if start <= h < start + layer.heads]
            if not local:
                if request.per_layer:
                    raise ValueError(f'CaptureRequest {request.name!r}: per_layer needs at least one '
                                     f'head of layer {layer.name!r} (its heads are {start}..'
                                     f'{start + layer.heads - 1}); selected: {list(request.heads)}')
                continue
            heads = tuple(local)
            n_mean = len(local) if request.per_layer else len(request.heads)
        plan[layer.name] = _Sink(request.name, heads, 1.0 / n_mean,
                                 slot if request.per_layer else None)
    return plan


class CaptureSession:
    """Buffers and step bookkeeping shared by the processors of one capture.

    Args:
        spec: what to capture.
        layers: the U-Net's attention layers for this input (:func:`unet_attention_layers`).
        batch_size: samples per U-Net call; a call with twice as many is a CFG batch
            ``[uncond, cond]`` and only its second half is captured.
        steps: indices of the U-Net calls to capture (``None`` = all).
        chunk_bytes: float32 logit bytes the torch map path computes at once per layer
            (``None``: by device, :func:`~mmdiffseg.attention.head_maps.default_chunk_bytes`).
        map_backend: ``'auto'`` (Triton kernel on CUDA, torch elsewhere), ``'torch'`` or
            ``'triton'`` (:mod:`.head_maps`).
    """

    def __init__(self, spec: CaptureSpec, layers: Sequence[AttentionLayer], batch_size: int,
                 steps: Optional[Sequence[int]] = None, chunk_bytes: Optional[int] = None,
                 map_backend: str = 'auto'):
        resolve_backend(map_backend, None, masked=False)  # fail before any U-Net call
        self.spec, self.batch_size, self.chunk_bytes = spec, int(batch_size), chunk_bytes
        #: what a U-Net under torch.compile cannot find out in its traced forward, found when the
        #: session starts (:func:`capture_attention`): the torch path's chunk (from free memory)
        #: and the map backend of its unmasked layers (None: the torch path)
        self.traced_chunk_bytes = chunk_bytes
        self.traced_backend: Optional[str] = None
        self.map_backend = map_backend
        self.steps = None if steps is None else set(int(s) for s in steps)
        self.layer_sinks: Dict[str, List[_Sink]] = {}
        self.n_layers: Dict[str, int] = {}
        # requests averaged over several layers, whose maps may be deferred
        self.stashes: Dict[str, deferred_maps.LayerStash] = {}
        head_counts = {layer.name: layer.heads for layer in layers}
        for request in spec.requests:
            plan = _plan_request(request, layers)
            self.n_layers[request.name] = len(plan)
            for name, sink in plan.items():
                self.layer_sinks.setdefault(name, []).append(sink)
            if (not request.per_layer and len(plan) > 1
                    and len({sink.weight for sink in plan.values()}) == 1):
                self.stashes[request.name] = deferred_maps.LayerStash(
                    {name: (head_counts[name], sink.heads or range(head_counts[name]))
                     for name, sink in plan.items()}, next(iter(plan.values())).weight)
        self.buffers: Dict[str, torch.Tensor] = {}
        self._unset: set = set()  # deferred buffers not yet written
        self._backends: Dict[tuple, str] = {}
        self._averaged = False
        self._scratch: Dict[str, torch.Tensor] = {}
        self.step = -1
        self.captured_steps = 0
        self.active = False
        self.in_forward = False  # a forward began and has not returned
        self.unfinished: List[int] = []  # captured steps whose forward raised midway

    def begin_step(self) -> None:
        """Called before each U-Net forward: decides whether this step is captured."""
        if self.in_forward and self.active:
            self.unfinished.append(self.step)
        self.in_forward = True
        self.step += 1
        self.active = self.steps is None or self.step in self.steps
        self.captured_steps += int(self.active)
        for stash in self.stashes.values():  # what an interrupted forward left
            stash.pending.clear()

    def end_step(self) -> None:
        """Called after each U-Net forward: the staged layers' maps go into their buffers (the
        first time written over: a deferred buffer is allocated uninitialised)."""
        self.in_forward = False
        for request, stash in self.stashes.items():
            if stash.pending:
                stash.flush(self.buffers[request], self.scratch, overwrite=request in self._unset)
                self._unset.discard(request)

    def stage(self, sink: _Sink, layer: str, query, key, lse) -> bool:
        """Stages ``layer``'s captured rows for ``sink`` where its maps are deferred
        (:mod:`.deferred_maps`); False where the caller adds them now, and always under
        ``torch.compile`` (the stash is Python state kept between layers)."""
        stash = self.stashes.get(sink.request)
        if stash is None or torch.compiler.is_compiling():
            return False
        shape = (self.batch_size, query.shape[2], key.shape[2])
        if not stash.accepts(query, key, 4 * math.prod(shape)):
            return False
        if sink.request not in self.buffers:
            self._unset.add(sink.request)
            self.buffers[sink.request] = query.new_empty(shape, dtype=torch.float32)
        stash.add(layer, query, key, lse)
        return True

    def backend(self, device, masked: bool) -> str:
        """The map backend of a layer call (:func:`.head_maps.resolve_backend`, once per
        session, device and masking); under ``torch.compile`` the one resolved when the session
        started, the PyTorch path for a masked layer: the Triton kernels are operators of the
        graph there (:mod:`.map_kernel`), the PyTorch path is traced and compiled with the U-Net."""
        if torch.compiler.is_compiling():
            return 'torch' if masked else self.traced_backend or 'torch'
        key = (device, masked)
        if key not in self._backends:
            self._backends[key] = resolve_backend(self.map_backend, device, masked)
        return self._backends[key]

    def capture_rows(self, batch: int) -> slice:
        """The batch rows to capture: all of them, or the conditional half of a CFG batch."""
        if batch == self.batch_size:
            return slice(0, batch)
        if batch == 2 * self.batch_size:
            return slice(self.batch_size, batch)
        raise RuntimeError(f'attention capture expected a batch of {self.batch_size} samples (or '
                           f'{2 * self.batch_size} with classifier-free guidance), got {batch}')

    def buffer(self, sink: _Sink, n_query: int, n_key: int, device) -> torch.Tensor:
        if sink.request not in self.buffers:
            shape = (self.batch_size,) + ((self.n_layers[sink.request],) if sink.slot is not None
                                          else ()) + (n_query, n_key)
            self.buffers[sink.request] = torch.zeros(shape, dtype=torch.float32, device=device)
        buf = self.buffers[sink.request]
        if sink.request in self._unset:  # a deferred buffer that a layer adds to directly
            self._unset.discard(sink.request)
            buf.zero_()
        return buf[:, sink.slot] if sink.slot is not None else buf

    def scratch(self, slot: str, numel: int, dtype, device) -> torch.Tensor:
        """A flat scratch tensor of ``numel`` elements, reused until a larger one is needed."""
        held = self._scratch.get(slot)
        if held is None or held.numel() < numel or held.dtype != dtype or held.device != device:
            held = self._scratch[slot] = torch.empty(numel, dtype=dtype, device=device)
        return held[:numel]

    def release_scratch(self) -> None:
        self._scratch.clear()
        for stash in self.stashes.values():
            stash.release()

    def results(self) -> Dict[str, torch.Tensor]:
        """Request name -> averaged map (float32); the buffers are divided in place, once.

        Raises:
            RuntimeError: no step was captured, a requested layer never ran, or a captured
                step's forward raised midway (caught inside the block): its maps are partial.
        """
        unfinished = self.unfinished + ([self.step] if self.in_forward and self.active else [])
        if unfinished:
            raise RuntimeError(f'the U-Net forward of captured step(s) {unfinished} did not '
                               'finish (an error was caught inside the capture block), so the '
                               'maps hold part of it: capture again in a new block')
        if self.captured_steps == 0:
            raise RuntimeError(f'no U-Net step was captured (steps {sorted(self.steps or [])}, '
                               f'{self.step + 1} step(s) run)')
        missing = [r.name for r in self.spec.requests if r.name not in self.buffers]
        if missing:
            raise RuntimeError(f'attention of {missing} was never computed: the U-Net did not run '
                               'the requested layers')
        if not self._averaged:
            for buf in self.buffers.values():
                buf.div_(self.captured_steps)
            self._averaged = True
        return dict(self.buffers)


class CaptureProcessor:
    """Attention processor of one captured layer: ``AttnProcessor2_0``'s computation, plus the
    maps of its sinks. Sinks that average the same heads share one head sum.

    Outside captured steps it defers to the layer's original processor.
    """

    def __init__(self, session: CaptureSession, layer: AttentionLayer, sinks: List[_Sink], fallback):
        self.session, self.layer, self.fallback = session, layer, fallback
        groups: Dict[Tuple[int, ...], List[_Sink]] = {}
        for sink in sinks:
            groups.setdefault(sink.heads or tuple(range(layer.heads)), []).append(sink)
        self.groups = list(groups.items())
        self._head_index: Dict[tuple, torch.Tensor] = {}

    def _heads_on(self, heads: Tuple[int, ...], device) -> torch.Tensor:
        if torch.compiler.is_compiling():   # a constant of the graph (no pinned staging there)
            return torch.tensor(heads, dtype=torch.long, device=device)
        key = (heads, device)
        if key not in self._head_index:  # copied without waiting for the kernels queued
            self._head_index[key] = host_to_device(list(heads), device)
        return self._head_index[key]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        if not self.session.active:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                 *args, **kwargs)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attention_mask is not None:  # the norms keep the key count
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads

        def split(x):
            return x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        query, key, value = split(query), split(key), split(value)
        if query.shape[2] != self.layer.resolution ** 2:
            raise RuntimeError(f'{self.layer.name}: {query.shape[2]} query tokens, expected '
                               f'{self.layer.resolution}x{self.layer.resolution} for this input')
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        out = self.attend(attn, query, key, value, attention_mask)
        hidden_states = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.to(query.dtype)))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def attend(self, attn, query, key, value, mask) -> torch.Tensor:
        """The SDPA output of ``(B, H, N, d)`` heads of module ``attn``; the captured rows'
        probabilities are folded into every sink's buffer on the way."""
        out, lse = sdpa_with_lse(query, key, value, mask)
        session, device = self.session, query.device
        rows = session.capture_rows(query.shape[0])
        query, key, lse = query[rows], key[rows], None if lse is None else lse[rows]
        n_query, n_key = query.shape[2], key.shape[2]
        backend = session.backend(device, mask is not None)
        targets = []
        for heads, sinks in self.groups:
            now = []
            for sink in sinks:
                if not (backend == 'triton'
                        and session.stage(sink, self.layer.name, query, key, lse)):
                    now.append((session.buffer(sink, n_query, n_key, device), sink.weight))
            if now:
                targets.append((self._heads_on(heads, device), now))
        if targets:
            chunk_bytes = (session.traced_chunk_bytes if torch.compiler.is_compiling()
                           else session.chunk_bytes)
            add_resolved(query, key, lse, None if mask is None else mask[rows], targets, backend,
                         chunk_bytes, session.scratch)
        return out


@contextlib.contextmanager
def capture_attention(unet, spec: CaptureSpec, latent_size: int, batch_size: int,
                      steps: Optional[Sequence[int]] = None,
                      chunk_bytes: Optional[int] = None,
                      map_backend: str = 'auto') -> Iterator[CaptureSession]:
    """Install :class:`CaptureProcessor` on the layers ``spec`` needs for the duration of the block.

    Every U-Net forward inside the block is one step; ``steps`` selects which are captured. Read
    the maps with ``session.results()`` after the U-Net calls; it refuses them where a captured
    step's forward raised midway and the error was caught inside the block (some of its layers
    were added). The original processors are restored on exit, also on errors. One thread at a
    time captures a U-Net (:mod:`.capture_threads`).
    """
    with captured_by_this_thread(unet), _processors_installed(
            unet, spec, latent_size, batch_size, steps, chunk_bytes, map_backend) as session:
        yield session


@contextlib.contextmanager
def _processors_installed(unet, spec: CaptureSpec, latent_size: int, batch_size: int,
                          steps: Optional[Sequence[int]], chunk_bytes: Optional[int],
                          map_backend: str) -> Iterator[CaptureSession]:
    layers = unet_attention_layers(unet, latent_size)
    session = CaptureSession(spec, layers, batch_size, steps, chunk_bytes, map_backend)
    if spec.requests and compiled(unet):
        if chunk_bytes is None:
            session.traced_chunk_bytes = default_chunk_bytes(unet.device)
        session.traced_backend = resolve_backend(map_backend, unet.device, masked=False)
    by_name = {layer.name: layer for layer in layers}
    modules = {name: module for _, name, module in attention_modules(unet)}
    for name in session.layer_sinks:   # before anything changes on the U-Net
        replaceable_processor(name, modules[name].processor)
    original = {}
    hooks = (unet.register_forward_pre_hook(lambda module, args: session.begin_step()),
             unet.register_forward_hook(lambda module, args, output: session.end_step()))
    try:  # only the captured modules change processor, and only they are restored
        for name, sinks in session.layer_sinks.items():
            original[name] = modules[name].processor
            modules[name].set_processor(CaptureProcessor(session, by_name[name], sinks,
                                                         original[name]))
        yield session
    finally:
        for hook in hooks:
            hook.remove()
        for name, processor in original.items():
            modules[name].set_processor(processor)
        session.release_scratch()
