"""PAMR's CUDA backends (fused Triton kernel, CUDA graphs) against the PyTorch steps on the GPU.

Skipped without CUDA (the kernel's logic is tested on CPU under Triton's interpreter in
``test_pamr_triton.py``); a GPU session runs ``pytest tests/generators/test_pamr_cuda.py``.
"""
import pytest
import torch

from mmdiffseg.generators.pamr import ORIGINAL_PAMR, PAMR
from mmdiffseg.triton_support import triton_problem

if not torch.cuda.is_available():
    pytest.skip('needs a CUDA device', allow_module_level=True)

CASES = [((2, 3, 97, 131), dict(num_iter=300)),
         ((1, 2, 70, 64), ORIGINAL_PAMR),
         ((1, 1, 512, 512), dict(num_iter=5000)),
         ((2, 1, 45, 50), dict(num_iter=400, tol=1e-3, check_every=10))]


def skip_without_triton_kernels():
    """Triton missing, or a GPU older than the kernels need (e.g. a T4): ``backend='auto'``
    takes the graphs there, and ``'triton'`` is refused with this reason."""
    problem = triton_problem('cuda')
    if problem is not None:
        pytest.skip(problem)


def inputs(shape):
    b, c, h, w = shape
    gen = torch.Generator().manual_seed(h + w)
    image = torch.rand(b, 3, h, w, generator=gen) * 255
    return image.cuda(), (torch.rand(b, c, h, w, generator=gen) > 0.5).float().cuda()


@pytest.mark.parametrize('backend', ['triton', 'graph'])
@pytest.mark.parametrize('shape,settings', CASES)
def test_cuda_backend_equals_the_pytorch_steps(backend, shape, settings):
    if backend == 'triton':
        skip_without_triton_kernels()
    image, mask = inputs(shape)
    expected = PAMR(**settings, backend='torch')(image, mask)
    out = PAMR(**settings, backend=backend)(image, mask)
    taps = 8 * len(settings.get('dilations', (1, )))
    bound = 2 * settings['num_iter'] * taps * 2.0 ** -24  # the masks are 0/1
    assert (out - expected).abs().max().item() <= bound


def test_fused_propagation_never_waits_for_the_host():
    skip_without_triton_kernels()
    image, mask = inputs((1, 1, 128, 128))
    pamr = PAMR(num_iter=100, backend='triton')
    pamr(image, mask)  # compile outside the check
    torch.cuda.set_sync_debug_mode('error')
    try:
        pamr(image, mask)
    finally:
        torch.cuda.set_sync_debug_mode('default')
