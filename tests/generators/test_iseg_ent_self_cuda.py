"""iSeg's Ent-Self replayed from CUDA graphs against the eager steps on the GPU.

Skipped without CUDA (the eager steps are checked on the CPU in ``test_iseg_ent_self.py``); the
GPU suite's ``cuda_tests`` step runs it.
"""
import pytest
import torch

from mmdiffseg.generators.iseg_ent_self import GRAPH_MAX_BYTES, EntSelf

if not torch.cuda.is_available():
    pytest.skip('needs a CUDA device', allow_module_level=True)


def inputs(batch, classes, seed, n=4096):
    gen = torch.Generator(device='cuda').manual_seed(seed)
    sa = torch.softmax(torch.randn(batch, n, n, generator=gen, device='cuda') * 4, dim=-1)
    # (B, C, N) as ISeg passes them: a transposed view of (B, N, C) columns
    columns = torch.rand(batch, n, classes, generator=gen, device='cuda')
    columns[0, :, -1] = 0  # a padding column: 0 / 0 in the loop, zeros at the end
    return sa, columns.transpose(1, 2)


def test_replays_give_each_batch_its_own_eager_result():
    graphed, eager = EntSelf('graph'), EntSelf('torch')
    # recorded on the first of each layout, replayed after; a new batch size records anew
    for batch, classes, seed in [(1, 3, 0), (1, 3, 1), (1, 5, 2), (1, 3, 3), (2, 3, 4), (2, 3, 5)]:
        sa, x0 = inputs(batch, classes, seed)
        expected = eager(sa, x0, 0.015, 10)
        out = graphed(sa, x0, 0.015, 10)
        # the same kernels on buffers of the same layouts: agreement to the last bit is
        # expected; the bound allows a matrix-product algorithm chosen otherwise under capture
        assert torch.allclose(out, expected, rtol=1e-5, atol=1e-9), (batch, classes, seed)
        assert torch.equal(out[0, -1], torch.zeros_like(out[0, -1]))
    assert len(graphed._graphs.graphs) == 1  # the batch of 2 dropped the graphs of batch 1


def test_auto_records_small_batches_only():
    sa, _ = inputs(1, 2, 0)
    assert EntSelf('auto').backend_for(sa) == 'graph'
    big = torch.empty(GRAPH_MAX_BYTES // (4 * 4096 * 4096) + 1, 4096, 4096, device='cuda')
    assert EntSelf('auto').backend_for(big) == 'torch'


def test_a_replay_never_waits_for_the_host():
    ent_self = EntSelf('graph')
    sa, x0 = inputs(1, 3, 0)
    ent_self(sa, x0, 0.015, 10)  # records
    torch.cuda.set_sync_debug_mode('error')
    try:
        ent_self(sa, x0, 0.015, 10)
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
    out = {}
    for backend in ('torch', 'graph'):
        gen = ISeg.from_preset('wsss_voc', use_cluster=False, ent_self_backend=backend).cuda()
        with torch.inference_mode():  # recorded there, its buffers written again outside
            first = gen(maps, None, names)
        out[backend] = [first, gen(maps, None, names)]
    for graphed in out['graph']:
        assert (graphed == out['torch'][0]).float().mean() > 0.999
