"""Gaps found by a mutation audit of mmdiffseg.cuda_graphs (CPU: fake CUDA tensors)."""
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from mmdiffseg.cuda_graphs import AUTO_MAX_BYTES, use_graphs


def test_auto_limit_is_four_4096_square_float32_self_attentions():
    """AUTO_MAX_BYTES is what its comment says: 4 images of 4096x4096 float32 self-attention
    (256 MiB), so such a batch still replays graphs on 'auto' and a fifth image does not."""
    assert AUTO_MAX_BYTES == 4 * 4096 * 4096 * 4
    with FakeTensorMode():
        four = torch.empty(4, 4096, 4096, device='cuda')
        five = torch.empty(5, 4096, 4096, device='cuda')
    assert use_graphs('auto', four, 'x')
    assert not use_graphs('auto', five, 'x')
