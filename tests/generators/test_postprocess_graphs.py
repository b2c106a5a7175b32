"""DiffSeg's and iSeg's graphed steps wired through ``GraphCache``, on the CPU: with CUDA graphs
stood in for (the ``replaying_graphs`` fixture: a replay re-runs the recorded steps on the graph's
buffers), a generator made to replay its steps gives the eager labels on every call: the one that
records, and replays on other maps. Wrong inputs, settings or buffers in the wiring change labels
here; the real graphs are checked on a GPU by ``test_postprocess_graphs_cuda.py``."""
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mmdiffseg.generators import DiffSeg, ISeg
from mmdiffseg.generators.class_names import VOC_CLASSES, prompt_names
from mmdiffseg.generators.testing import attention_from_labels


def voc_like_labels(shift: int) -> torch.Tensor:
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[0, 10 + shift:40, 5:30 + shift], labels[0, 40:, 20:50] = 12, 8
    return labels


def replays_equal_eager(eager, graphed, calls):
    # recorded in inference mode (its buffers written again outside), replayed on other maps,
    # then on the first
    for i, (maps, names) in enumerate(calls + calls[:1]):
        with torch.inference_mode(i == 0):
            labels = graphed(maps, None, names)
        assert torch.equal(labels, eager(maps, None, names))


def test_diffseg_first_pass_from_replayed_graphs(replaying_graphs):
    calls = [(attention_from_labels(voc_like_labels(s), VOC_CLASSES, noise=0.15, seed=s)[0], None)
             for s in (0, 7)]
    for precision in ('float16', 'float32'):
        graphed = DiffSeg(merge_precision=precision)
        graphed.first_pass.graphed = lambda largest: True  # as 'auto' on CUDA at batch 1
        replays_equal_eager(DiffSeg(merge_precision=precision, postprocess_backend='torch'),
                            graphed, calls)
        cache, = graphed.first_pass._caches.values()
        assert len(cache.graphs) == 1
    assert len(replaying_graphs) == 2


def test_iseg_smoothing_and_ent_self_from_replayed_graphs(replaying_graphs):
    words = prompt_names(VOC_CLASSES, 'voc')
    calls = []
    for s in (0, 7):
        maps, found = attention_from_labels(voc_like_labels(s), words, noise=0.15, seed=s,
                                            self_resolutions=(64,), cross_resolutions=(32, 16))
        for key in ('self64', 'cross16', 'cross32'):
            maps.maps[f'iseg_{key}'] = maps.maps.pop(key)
        calls.append((maps, [[VOC_CLASSES[words.index(w)] for w in ws] for ws in found]))
    graphed = ISeg.from_preset('wsss_voc')
    graphed.steps.graphed = lambda self_attn: True
    replays_equal_eager(ISeg.from_preset('wsss_voc', postprocess_backend='torch'), graphed, calls)
    assert sorted(name for name, *_ in graphed.steps._caches) == ['ent_self', 'smooth']
    assert len(replaying_graphs) == 2


def test_the_backend_is_checked_for_both_generators():
    import pytest
    for make in (DiffSeg, ISeg):
        with pytest.raises(ValueError, match=r"postprocess_backend must be one of .*'cuda'"):
            make(postprocess_backend='cuda')
    maps = attention_from_labels(voc_like_labels(0), VOC_CLASSES, noise=0.15)[0]
    with pytest.raises(ValueError, match=r"DiffSeg\(postprocess_backend='graph'\) needs CUDA "
                                         r"tensors, got cpu; use postprocess_backend='auto'"):
        DiffSeg(postprocess_backend='graph')(maps)
    assert torch.equal(DiffSeg()(maps), DiffSeg(postprocess_backend='torch')(maps))


class CaptureRules(TorchDispatchMode):
    """Names each operator a CUDA graph capture refuses or bakes in: a read of device data by the
    host, a random draw, or a CPU tensor among CUDA ones (a blocking copy to the GPU)."""
    HOST_READS = ('_local_scalar_dense', 'nonzero', 'is_nonzero', 'equal')
    RANDOM = ('rand', 'randn', 'randint', 'normal', 'uniform', 'bernoulli', 'multinomial')

    def __init__(self):
        super().__init__()
        self.refused = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__.rstrip('_')
        devices = {t.device.type for t in tree_leaves((args, kwargs))
                   if isinstance(t, torch.Tensor)}
        if name in self.HOST_READS or name in self.RANDOM:
            self.refused.add(name)
        elif devices == {'cpu', 'cuda'}:
            self.refused.add(f'{name} with a CPU tensor')
        return func(*args, **kwargs)


def capture_problems(steps, *inputs, writers=None):
    """What ``steps`` does that a capture refuses, run on fake CUDA tensors of the ``inputs``'
    layouts (no GPU needed); ``writers`` run before, outside the capture, as in ``GraphCache``."""
    writers = writers or {}
    rules = CaptureRules()
    with FakeTensorMode():
        fakes = [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device='cuda')
                 for t in inputs]
        fakes = [writers[i](t) if i in writers else t for i, t in enumerate(fakes)]
        with rules:
            steps(*fakes)
    return rules.refused


def test_every_recorded_step_is_capturable(monkeypatch):
    """Each step a generator records into a CUDA graph (DiffSeg's first pass in both precisions,
    iSeg's k-means smoothing and Ent-Self, PAMR's steps), run on fake CUDA tensors: no host read,
    no random draw, no CPU operand. DiffSeg's float32 pass set its anchors' own matches with an
    indexed assignment of 1, a CPU value copied to the GPU: its capture failed and it ran eagerly."""
    from mmdiffseg import triton_support
    from mmdiffseg.cuda_graphs import GraphCache
    from mmdiffseg.generators.pamr import PAMR, _ShiftedSteps
    monkeypatch.setattr(triton_support, '_installed', lambda: False)  # no Triton launch on fakes
    checked = {}
    eager = GraphCache.eager

    def check(self, *inputs):  # the generators reach GraphCache.eager on the CPU
        checked[self.name] = capture_problems(self.fn, *inputs, writers=self.writers)
        return eager(self, *inputs)
    monkeypatch.setattr(GraphCache, 'eager', check)
    monkeypatch.setattr(GraphCache, '__call__', GraphCache.eager)
    maps = attention_from_labels(voc_like_labels(0), VOC_CLASSES, noise=0.15)[0]
    for precision in ('float16', 'float32'):
        generator = DiffSeg(merge_precision=precision)
        generator.first_pass.graphed = lambda largest: True
        generator(maps)
        assert checked.pop(next(iter(checked))) == set(), precision
    words = prompt_names(VOC_CLASSES, 'voc')
    maps, found = attention_from_labels(voc_like_labels(0), words, noise=0.15,
                                        self_resolutions=(64,), cross_resolutions=(32, 16))
    for key in ('self64', 'cross16', 'cross32'):
        maps.maps[f'iseg_{key}'] = maps.maps.pop(key)
    generator = ISeg.from_preset('wsss_voc')
    generator.steps.graphed = lambda self_attn: True
    generator(maps, None, [[VOC_CLASSES[words.index(w)] for w in ws] for ws in found])
    assert len(checked) == 2 and all(problems == set() for problems in checked.values()), checked
    for measure in (False, True):
        pamr = PAMR(num_iter=10)
        with FakeTensorMode():
            image = torch.empty(1, 3, 40, 50, device='cuda')
            steps = _ShiftedSteps(pamr.affinity(image), torch.empty(1, 1, 40, 50, device='cuda'),
                                  pamr.pad, pamr.offsets)
            rules = CaptureRules()
            with rules:
                steps.advance(5, measure)
        assert rules.refused == set()
