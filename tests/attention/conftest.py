"""Tiny random-weights engines (built once per process) and an independent attention reference.

The reference records each attention module's inputs with forward pre-hooks and recomputes the
probabilities by hand: q/k projections, heads split as ``(B, N, heads, d)``, ``softmax(q k^T / sqrt d)``
in float64. It shares nothing with :mod:`mmdiffseg.attention.capture` but the module weights.
"""
from collections import defaultdict

import pytest
import torch

from mmdiffseg.attention import testing

SD1, SD2 = 'stable-diffusion-v1-4', 'stable-diffusion-2-1-base'
_ENGINES = {}


@pytest.fixture
def tiny_engine(sd_config_dir):
    """``tiny_engine(name, dtype=torch.float32)`` -> engine on the tiny pipeline of ``name``,
    one per name and dtype in this process."""
    def get(name=SD2, dtype=torch.float32):
        if (name, dtype) not in _ENGINES:
            _ENGINES[name, dtype] = testing.tiny_engine(sd_config_dir(name), dtype=dtype)
        return _ENGINES[name, dtype]
    return get


class InputRecorder:
    """Records ``(hidden_states, encoder_hidden_states)`` of every call of the named modules."""

    def __init__(self, unet, names):
        self.calls = defaultdict(list)
        self.modules = {name: unet.get_submodule(name) for name in names}
        self._hooks = [module.register_forward_pre_hook(self._hook(name), with_kwargs=True)
                       for name, module in self.modules.items()]

    def _hook(self, name):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs['hidden_states']
            context = kwargs.get('encoder_hidden_states')
            self.calls[name].append((hidden.detach().clone(),
                                     None if context is None else context.detach().clone()))
        return hook

    def remove(self):
        for hook in self._hooks:
            hook.remove()

    def naive_probs(self, name, call=0):
        """``(B, heads, N, K)`` float64 probabilities of call ``call`` of module ``name``."""
        attn = self.modules[name]
        hidden, context = self.calls[name][call]
        context = hidden if context is None else context
        with torch.no_grad():
            q, k = attn.to_q(hidden).double(), attn.to_k(context).double()
        b, n, inner = q.shape
        heads, d = attn.heads, inner // attn.heads
        q = q.view(b, n, heads, d).permute(0, 2, 1, 3)
        k = k.view(b, k.shape[1], heads, d).permute(0, 2, 1, 3)
        return torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1)


@pytest.fixture
def record_inputs():
    recorders = []

    def make(unet, names):
        recorder = InputRecorder(unet, names)
        recorders.append(recorder)
        return recorder
    yield make
    for recorder in recorders:
        recorder.remove()
