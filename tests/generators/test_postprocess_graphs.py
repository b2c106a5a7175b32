"""DiffSeg's and iSeg's graphed steps wired through ``GraphCache``, on the CPU: with CUDA graphs
stood in for (the ``replaying_graphs`` fixture: a replay re-runs the recorded steps on the graph's
buffers), a generator made to replay its steps gives the eager labels on every call: the one that
records, and replays on other maps. Wrong inputs, settings or buffers in the wiring change labels
here; the real graphs are checked on a GPU by ``test_postprocess_graphs_cuda.py``."""
import torch

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
