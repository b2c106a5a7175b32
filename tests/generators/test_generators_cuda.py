"""The generators' batched post-processing on a GPU against the same code on the CPU.

Skipped without CUDA (on the CPU, ``test_batched_postprocessing.py`` checks the batched steps
against the image-by-image formulation); a GPU session runs it in ``benchmarks/gpu_suite.sh``.
"""
import pytest
import torch

from mmdiffseg.generators.kmeans import kl_kmeans, grid_seeds, kmeans_batch
from mmdiffseg.generators.ordered_sums import cpu_order_cluster_sums
from mmdiffseg.triton_support import triton_problem

if not torch.cuda.is_available():
    pytest.skip('needs a CUDA device', allow_module_level=True)


def cross_attention(batch=2, pixels=4096, tokens=77, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(batch, pixels, tokens, generator=gen) * 3, -1)


@pytest.mark.parametrize('backend', ['torch', 'triton'])
def test_cpu_order_sums_on_the_gpu_equal_the_cpu_sums_bit_for_bit(backend):
    if backend == 'triton' and triton_problem('cuda') is not None:
        pytest.skip(triton_problem('cuda'))  # e.g. a T4: the torch order sums run there
    torch.set_num_threads(1)
    x = cross_attention()
    labels = torch.randint(0, 35, (2, 4096), generator=torch.Generator().manual_seed(1))
    labels[1, :3000] = 0  # a cluster of many groups of blocks
    sums = cpu_order_cluster_sums(x.cuda(), labels.cuda(), 36, backend=backend).cpu()
    for b in range(2):
        for c in range(36):
            assert torch.equal(sums[b, c], x[b][labels[b] == c].sum(0)), (b, c)


@pytest.mark.parametrize('precision', ['float16', 'float32'])
def test_kl_kmeans_on_the_gpu_agrees_with_the_cpu(precision):
    torch.set_num_threads(1)
    x, seeds = cross_attention(), grid_seeds(64, 32)
    cpu = kl_kmeans(x, seeds, 10, precision=precision)
    gpu = kl_kmeans(x.cuda(), seeds.cuda(), 10, precision=precision).cpu()
    # The centres are summed in the CPU's order on both (the test above); what differs is the
    # last bit of some float16 logs and distance sums, which flips near-tied assignments, and in
    # float16 a flip moves a centre and so the later assignments: 98.3% of the pixels agreed after
    # 10 steps on an H200 (torch 2.11), as the release itself would differ between devices.
    assert (gpu == cpu).float().mean() > (0.97 if precision == 'float16' else 0.995)


def test_kmeans_batch_on_the_gpu_agrees_with_the_cpu():
    x = [cross_attention(1, 1024, 64, seed)[0] for seed in range(3)]
    inits = [p[:8] for p in x]
    cpu = kmeans_batch(x, inits)[1]
    gpu = kmeans_batch([p.cuda() for p in x], [i.cuda() for i in inits])[1]
    for a, b in zip(cpu, gpu):
        assert (a == b.cpu()).float().mean() > 0.995


@pytest.mark.parametrize('dtype', [torch.float16, torch.float32])
def test_cuda_float16_noise_is_the_released_isegs_draw(dtype):
    """iSeg's release: ``torch.cuda.manual_seed(1101)``, then ``randn_like`` of its float16
    ``(1, 4, 64, 64)`` latents; every image of a batch gets that noise, cast to the latents'."""
    from mmdiffseg.attention.noise import shared_noise
    torch.cuda.manual_seed(1101)
    released = torch.randn_like(torch.empty(1, 4, 64, 64, device='cuda', dtype=torch.float16))
    latents = torch.zeros(3, 4, 64, 64, device='cuda', dtype=dtype)
    noise = shared_noise(1101, latents, 'cuda_float16')
    assert noise.shape == latents.shape and noise.dtype == dtype
    for b in range(3):
        assert torch.equal(noise[b], released[0].to(dtype))
    assert not torch.equal(shared_noise(1101, latents, 'cpu')[0], noise[0])
