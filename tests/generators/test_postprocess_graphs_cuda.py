"""iSeg's k-means smoothing and Ent-Self, and DiffSeg's first pass, replayed from CUDA graphs
against the eager steps on the GPU.

Skipped without CUDA (the eager steps are checked on the CPU in ``test_iseg_ent_self.py`` and the
DiffSeg tests, the wiring in ``test_postprocess_graphs.py``, the graph cache's bookkeeping in
``tests/test_cuda_graphs.py``); the GPU suite's ``cuda_tests`` step runs it.
"""
import pytest
import torch

from mmdiffseg.cuda_graphs import AUTO_MAX_BYTES
from mmdiffseg.generators.iseg_graphs import ISegSteps
from mmdiffseg.generators.kmeans import grid_seeds

if not torch.cuda.is_available():
    pytest.skip('needs a CUDA device', allow_module_level=True)


def inputs(batch, classes, seed, n=4096, tokens=77):
    gen = torch.Generator(device='cuda').manual_seed(seed)
    sa = torch.softmax(torch.randn(batch, n, n, generator=gen, device='cuda') * 4, dim=-1)
    # (B, C, N) as ISeg passes them: a transposed view of (B, N, C) columns
    columns = torch.rand(batch, n, classes, generator=gen, device='cuda')
    columns[0, :, -1] = 0  # a padding column: 0 / 0 in the loop, zeros at the end
    cross = torch.softmax(torch.randn(batch, n, tokens, generator=gen, device='cuda') * 3, -1)
    return sa, columns.transpose(1, 2), cross


# (batch, classes, seed): recorded on the first of each layout, replayed after; a new class count
# records a graph that shares the attention buffer; a new batch size records anew
CALLS = [(1, 3, 0), (1, 3, 1), (1, 5, 2), (1, 3, 3), (2, 3, 4), (2, 3, 5)]


def test_ent_self_replays_give_each_batch_its_own_eager_result():
    steps = ISegSteps('graph')
    for batch, classes, seed in CALLS:
        sa, x0, _ = inputs(batch, classes, seed)
        expected = steps.ent_self(sa, x0, 0.015, 10, graphed=False)
        out = steps.ent_self(sa, x0, 0.015, 10, graphed=True)
        # the same kernels on buffers of the same layouts: agreement to the last bit is
        # expected; the bound allows a matrix-product algorithm chosen otherwise under capture
        assert torch.allclose(out, expected, rtol=1e-5, atol=1e-9), (batch, classes, seed)
        assert torch.equal(out[0, -1], torch.zeros_like(out[0, -1]))
    cache, = steps._caches.values()
    assert len(cache.graphs) == 3 and not cache.failed  # (1, 3), (1, 5), (2, 3)
    attention_buffers = {id(buffers[0]) for _, buffers, _ in cache.graphs.values()}
    assert len(attention_buffers) == 2  # one per batch size


@pytest.mark.parametrize('precision', ['float16', 'float32'])
def test_smoothing_replays_give_each_batch_its_own_eager_result(precision):
    steps = ISegSteps('graph')
    seeds = grid_seeds(64, 32, device='cuda')
    for batch, _, seed in CALLS:
        cross = inputs(batch, 1, seed)[2]
        expected = steps.smooth(cross, seeds, 20, precision, graphed=False)
        out = steps.smooth(cross, seeds, 20, precision, graphed=True)
        assert torch.allclose(out, expected, rtol=1e-5, atol=1e-9), (batch, seed)
    cache, = steps._caches.values()
    assert len(cache.graphs) == 2 and not cache.failed


def test_auto_records_small_batches_only():
    sa = torch.empty(1, 4096, 4096, device='cuda')
    assert ISegSteps('auto').graphed(sa)
    big = torch.empty(AUTO_MAX_BYTES // (4 * 4096 * 4096) + 1, 4096, 4096, device='cuda')
    assert not ISegSteps('auto').graphed(big) and ISegSteps('graph').graphed(big)
    assert not ISegSteps('torch').graphed(sa)


def test_a_replay_never_waits_for_the_host():
    from mmdiffseg.generators.diffseg_first_pass import FirstPass, anchor_grid
    steps, first_pass = ISegSteps('graph'), FirstPass('graph')
    sa, x0, cross = inputs(1, 3, 0)
    seeds, anchors = grid_seeds(64, 32, device='cuda'), anchor_grid(16, 64, device='cuda')
    maps = [torch.softmax(torch.rand(1, r * r, r * r, device='cuda'), -1) for r in (64, 32, 16, 8)]

    def run():
        steps.smooth(cross, seeds, 20, 'float16', graphed=True)
        steps.ent_self(sa, x0, 0.015, 10, graphed=True)
        first_pass(maps, [0.5, 0.25, 0.15, 0.1], 64, anchors, 1.1, 'float16', graphed=True)
    run()  # records
    torch.cuda.set_sync_debug_mode('error')
    try:
        run()
    finally:
        torch.cuda.set_sync_debug_mode('default')


def test_iseg_labels_are_the_same_with_and_without_graphs():
    from mmdiffseg.generators import ISeg
    from mmdiffseg.generators.class_names import VOC_CLASSES, prompt_names
    from mmdiffseg.generators.testing import attention_from_labels
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[0, 10:40, 5:30], labels[1, 30:, 20:50], labels[1, :20, :20] = 12, 8, 15
    words = prompt_names(VOC_CLASSES, 'voc')
    maps, found = attention_from_labels(labels, words, noise=0.15, self_resolutions=(64,),
                                        cross_resolutions=(32, 16), seed=0)
    for key in ('self64', 'cross16', 'cross32'):
        maps.maps[f'iseg_{key}'] = maps.maps.pop(key)
    names = [[VOC_CLASSES[words.index(w)] for w in ws] for ws in found]
    maps = maps.to('cuda')
    for use_cluster in (True, False):
        out = {}
        for backend in ('torch', 'graph'):
            gen = ISeg.from_preset('wsss_voc', use_cluster=use_cluster,
                                   postprocess_backend=backend).cuda()
            with torch.inference_mode():  # recorded there, its buffers written again outside
                first = gen(maps, None, names)
            out[backend] = [first, gen(maps, None, names)]
        for graphed in out['graph']:
            assert (graphed == out['torch'][0]).float().mean() > 0.999, use_cluster


@pytest.mark.parametrize('precision', ['float16', 'float32'])
def test_diffseg_first_pass_replays_give_each_batch_its_own_eager_result(precision):
    from mmdiffseg.generators.diffseg_first_pass import FirstPass, anchor_grid
    first_pass = FirstPass('graph')
    anchors = anchor_grid(16, 64, device='cuda')
    weights = [r / 120 for r in (64, 32, 16, 8)]
    for batch, seed in [(1, 0), (1, 1), (2, 2), (1, 3)]:
        gen = torch.Generator(device='cuda').manual_seed(seed)
        maps = [torch.softmax(torch.randn(batch, r * r, r * r, generator=gen, device='cuda') * 4,
                              dim=-1) for r in (64, 32, 16, 8)]
        expected = first_pass(maps, weights, 64, anchors, 1.1, precision, graphed=False)
        out = first_pass(maps, weights, 64, anchors, 1.1, precision, graphed=True)
        assert torch.allclose(out, expected, rtol=1e-5, atol=1e-9), (batch, seed)
    cache, = first_pass._caches.values()
    assert len(cache.graphs) == 2 and not cache.failed


def test_diffseg_segments_are_the_same_with_and_without_graphs():
    from mmdiffseg.generators import DiffSeg
    from mmdiffseg.generators.class_names import VOC_CLASSES
    from mmdiffseg.generators.testing import attention_from_labels
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[0, 10:40, 5:30], labels[1, 30:, 20:50], labels[1, :20, :20] = 12, 8, 15
    maps = attention_from_labels(labels, VOC_CLASSES, noise=0.15, seed=0)[0].to('cuda')
    eager = DiffSeg(postprocess_backend='torch')(maps)
    graphed = DiffSeg(postprocess_backend='graph')
    for _ in range(2):  # recorded, then replayed
        assert (graphed(maps) == eager).float().mean() > 0.999
