"""The known-answer attention of ``mmdiffseg.generators.testing``, which many generator tests rely
on: its structure checked against values computed by hand (noise 0) and against its docstring."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mmdiffseg.generators.testing import NUM_TOKENS, attention_from_labels, load_label_png

CLASSES = ['background', 'cat', 'potted plant', 'dog']


def labels_8x8():
    """Background, 'potted plant' on the left half of rows 4-7, 'cat' on their right half,
    a void (255) pixel at (0, 0); no 'dog'."""
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 4:, :4], labels[0, 4:, 4:] = 2, 1
    labels[0, 0, 0] = 255
    return labels


def test_prompt_tokens_name_the_present_classes_but_background_and_void():
    maps, names = attention_from_labels(labels_8x8(), CLASSES, self_resolutions=(),
                                        cross_resolutions=(4,))
    assert names == [['cat', 'potted plant']]  # in label order, no background, no void
    assert maps.prompts == ['a photo of cat and potted plant']
    # begin-of-text at 0, 'a photo of' at 1-3: one token per word
    assert maps.token_positions == [{'cat': [4], 'potted plant': [6, 7]}]
    assert maps.image_size == (8, 8)
    assert set(maps.maps) == {'cross4'}


def test_cross_attention_without_noise_equals_the_hand_computed_softmax():
    """Noise 0: logit ``strength + 2`` on the begin-of-text token, ``strength`` on the tokens of
    the pixel's class (labels resized by nearest: every other pixel), 0 elsewhere."""
    labels = labels_8x8()
    strength = 4.0
    maps, _ = attention_from_labels(labels, CLASSES, noise=0.0, self_resolutions=(),
                                    cross_resolutions=(4,), cross_strength=strength)
    cross = maps.maps['cross4'][0]
    assert cross.shape == (16, NUM_TOKENS)
    small = labels[0, ::2, ::2].flatten()  # nearest from 8 to 4 takes the even pixels
    tokens = {1: [4], 2: [6, 7]}
    for p, c in enumerate(small.tolist()):
        on = tokens.get(c, [])
        z = math.exp(strength + 2) + len(on) * math.exp(strength) + (NUM_TOKENS - 1 - len(on))
        want = torch.full((NUM_TOKENS,), 1 / z)
        want[0] = math.exp(strength + 2) / z
        want[on] = math.exp(strength) / z
        assert torch.allclose(cross[p], want, atol=1e-6), p


def test_self_attention_without_noise_follows_the_segments():
    """Noise 0: logits ``f_q . f_k / temperature`` with unit features per segment, so a row's
    largest keys are its own segment's, with equal weights; a void pixel's row is uniform."""
    labels = labels_8x8()
    maps, _ = attention_from_labels(labels, CLASSES, noise=0.0, self_resolutions=(8, 4),
                                    cross_resolutions=(), temperature=0.1)
    assert set(maps.maps) == {'self8', 'self4'}
    attn = maps.maps['self8'][0]
    assert attn.shape == (64, 64)
    assert torch.allclose(attn.sum(-1), torch.ones(64))
    flat = labels[0].flatten()
    for q in (1, 32, 63):  # background, potted plant, cat
        own = flat == flat[q]
        assert torch.allclose(attn[q][own], attn[q][own][0].expand(int(own.sum())))
        assert attn[q][own].min() > attn[q][~own].max()
    assert torch.allclose(attn[0], torch.full((64,), 1 / 64))  # void: zero features
    small = maps.maps['self4'][0]
    assert torch.allclose(small[0], torch.full((16,), 1 / 16))  # the void pixel is kept at 4x4


def test_self_attention_logits_scale_with_one_over_the_temperature():
    """Noise 0 and one seed (the same unit features): ``log(a_own / a_other) = (1 - cos) / T``
    from either segment, 5 times larger at ``T = 0.1`` than at ``T = 0.5``."""
    labels = labels_8x8()
    ratio = {}
    for t in (0.1, 0.5):
        maps, _ = attention_from_labels(labels, CLASSES, noise=0.0, self_resolutions=(8,),
                                        cross_resolutions=(), temperature=t)
        attn = maps.maps['self8'][0].double()  # pixel 36 is a cat's, 32 a potted plant's
        ratio[t] = torch.log(attn[36, 36] / attn[36, 32])
        # unit features: the same (1 - cos) / T seen from the other segment
        assert torch.allclose(ratio[t], torch.log(attn[32, 32] / attn[32, 36]), rtol=1e-4)
    assert ratio[0.1] > 0
    assert torch.allclose(ratio[0.1], 5 * ratio[0.5], rtol=1e-4)


def test_query_and_key_noise_are_drawn_apart():
    """The diagonal carries no ``noise ** 2 * feature_dim`` bonus: a pixel attends to itself
    about as much as to another pixel of its segment."""
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[0, :, 8:] = 1
    maps, _ = attention_from_labels(labels, ['background', 'cat'], noise=0.3,
                                    self_resolutions=(16,), cross_resolutions=())
    attn = maps.maps['self16'][0]
    same = labels[0].flatten()[:, None] == labels[0].flatten()[None]
    assert attn.diagonal().mean() < 5 * attn[same].mean()


def test_the_seed_alone_fixes_the_maps():
    labels = labels_8x8()
    a, _ = attention_from_labels(labels, CLASSES, seed=3, self_resolutions=(4,),
                                 cross_resolutions=(4,))
    b, _ = attention_from_labels(labels, CLASSES, seed=3, self_resolutions=(4,),
                                 cross_resolutions=(4,))
    c, _ = attention_from_labels(labels, CLASSES, seed=4, self_resolutions=(4,),
                                 cross_resolutions=(4,))
    assert all(torch.equal(a.maps[k], b.maps[k]) for k in a.maps)
    assert not torch.equal(a.maps['self4'], c.maps['self4'])


@pytest.mark.parametrize('mode', ['L', 'P'])
def test_label_pngs_are_resized_by_nearest_neighbour(tmp_path, mode):
    """Index values survive the resize (no value between two labels), grey or palette PNG."""
    index = np.array([[0, 3], [7, 255]], dtype=np.uint8)
    img = Image.new(mode, (2, 2))
    img.putdata(index.flatten().tolist())
    if mode == 'P':
        img.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    img.save(tmp_path / 'x.png')
    assert torch.equal(load_label_png(tmp_path / 'x.png', size=None), torch.from_numpy(
        index.astype('int64')))
    big = load_label_png(tmp_path / 'x.png', size=4)
    assert big.dtype == torch.int64
    assert torch.equal(big, torch.from_numpy(np.kron(index, np.ones((2, 2), 'uint8'))
                                             .astype('int64')))
