"""label_images on the offline tools' loaded batch (a uint8 ``(B, 3, H, W)`` tensor, pinned on
CUDA) gives the labels of the list of arrays it was stacked from."""
import numpy as np
import torch

from mmdiffseg.attention import CaptureRequest, CaptureSpec
from mmdiffseg.generators import MaskGenerator
from mmdiffseg.models.online_labeler import label_images
from test_label_images import engine  # noqa: F401  (the tiny engine fixture)


class AttentionAndBrightness(MaskGenerator):
    """A label that depends on the attention and on the image: the key each 8x8 query attends
    to most (0..63), plus 64 where the working image is bright."""

    @property
    def capture_spec(self):
        return CaptureSpec((CaptureRequest('self', 8),))

    def extract_kwargs(self, class_names):
        return {}

    def forward(self, maps, images, class_names):
        attention = next(iter(maps.maps.values()))
        strongest = attention.argmax(-1).reshape(-1, 1, 8, 8).float()
        grid = torch.nn.functional.interpolate(strongest, size=images.shape[-2:],
                                               mode='nearest')[:, 0].long()
        return grid + 64 * (images.mean(1) > 127).long()


def test_a_batch_tensor_gives_the_labels_of_the_arrays(engine):  # noqa: F811
    rng = np.random.RandomState(0)
    arrays = [rng.randint(0, 256, (64, 64, 3)).astype(np.uint8) for _ in range(3)]
    arrays[1][:32] = 255  # a bright half
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    sizes = [(30, 50), (64, 20), (7, 7)]
    from_arrays = label_images(engine, AttentionAndBrightness(), arrays, None, sizes)
    from_batch = label_images(engine, AttentionAndBrightness(), batch, None, sizes)
    assert [lab.shape for lab in from_batch] == sizes
    assert all(lab.dtype == np.uint8 for lab in from_batch)
    for a, b in zip(from_arrays, from_batch):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(from_batch[1])) > 2 and from_batch[1][:15].min() >= 64
