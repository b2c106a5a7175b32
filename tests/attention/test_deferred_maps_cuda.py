"""Deferred head maps with the compiled Triton kernel, at the default threshold.

Skipped without a CUDA device Triton runs on (on the CPU, ``interpreted_map_kernel.py`` checks the
same logic through Triton's interpreter with every buffer deferred); a GPU session runs it in
``benchmarks/gpu_suite.sh``. At 512x512 and batch 4 a 64x64 self-attention map is 256 MiB
(``DEFER_MIN_BYTES``), so DiffSeg's spec defers its five 64x64 layers even on the tiny U-Net.
"""
import pytest
import torch
from sample_data import shared_path

from mmdiffseg.attention import deferred_maps
from mmdiffseg.triton_support import triton_problem

if not torch.cuda.is_available() or triton_problem('cuda') is not None:
    pytest.skip('needs a CUDA device the Triton kernels run on', allow_module_level=True)


@pytest.mark.parametrize('dtype', [torch.float16, torch.float32])
def test_deferred_maps_equal_the_torch_path_on_the_gpu(monkeypatch, dtype):
    from mmdiffseg.attention.testing import tiny_engine
    from mmdiffseg.generators import DiffSeg
    engine = tiny_engine(shared_path('sd_configs', 'stable-diffusion-v1-4'), device='cuda',
                         dtype=dtype)
    staged, add = [], deferred_maps.LayerStash.add
    monkeypatch.setattr(deferred_maps.LayerStash, 'add',
                        lambda stash, name, *args: (staged.append(name), add(stash, name, *args)))
    images = torch.randint(0, 256, (4, 3, 512, 512), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    spec = DiffSeg().capture_spec
    engine.map_backend = 'torch'
    ref = engine.extract(images, capture=spec)
    assert staged == []
    engine.map_backend = 'triton'
    got = engine.extract(images, capture=spec)
    assert len(staged) == 5 and all('attn1' in name for name in staged)  # the 64x64 layers
    for name in spec.names:
        torch.testing.assert_close(got[name], ref[name], atol=2e-6, rtol=1e-5)
