"""iSeg options, defaults and label paths pinned down by a mutation audit: option bounds and the
released defaults (ALGORITHMS.md 3.6), config_dict, class order, labels against the transcription
of the released post-processing at non-default settings, and the checks on malformed inputs."""
import sys
from pathlib import Path

import pytest
import torch

from mmdiffseg.attention.maps import AttentionMaps
from mmdiffseg.generators import ISeg
from mmdiffseg.generators.class_names import VOC_CLASSES, prompt_names
from mmdiffseg.generators.testing import attention_from_labels
from mmdiffseg.generators.transcriptions import iseg_postprocess

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'benchmarks'))
from bench_iseg import released_args  # noqa: E402

VOC_WORDS = prompt_names(VOC_CLASSES, 'voc')
CAT, DOG = VOC_CLASSES.index('cat'), VOC_CLASSES.index('dog')


def two_animals(noise=0.15, seed=0):
    """Synthetic iSeg maps of a 64x64 image: a cat square and a dog band on background."""
    gt = torch.zeros(1, 64, 64, dtype=torch.long)
    gt[0, 8:30, 6:34] = CAT
    gt[0, 40:60, 20:62] = DOG
    maps, words = attention_from_labels(gt, VOC_WORDS, noise=noise, self_resolutions=(64,),
                                        cross_resolutions=(32, 16), seed=seed)
    for key in ('self64', 'cross16', 'cross32'):
        maps.maps[f'iseg_{key}'] = maps.maps.pop(key)
    return maps, [[VOC_CLASSES[VOC_WORDS.index(w)] for w in ws] for ws in words], gt


# -- options -------------------------------------------------------------------------------------
def test_the_defaults_are_the_released_wsss_voc_settings():
    """ALGORITHMS.md 3.6 (WSSS VOC) and ``DFC_KL(32, 20, 64)``, read off the generator itself."""
    gen = ISeg()
    assert (gen.timestep, gen.noise_seed, gen.noise_draw, gen.token_enhance) == \
        (100, 1101, 'cpu', 1.6)
    assert gen.res_weights == {16: 0.7, 32: 0.3}
    assert (gen.cross_heads, gen.self_heads) == ('voc', (1, 2))
    assert (gen.use_cluster, gen.num_clusters, gen.cluster_iters, gen.kmeans_precision) == \
        (True, 32, 20, 'float16')
    assert (gen.iters, gen.ent, gen.cam_bg_thr, gen.mask_size) == (10, 0.015, 0.0, 512)
    assert gen.token_table == 'released' and gen.class_order == list(VOC_CLASSES)


def test_options_at_the_edge_of_their_range_are_accepted():
    gen = ISeg(timestep=0, iters=0, ent=0, num_clusters=1, cluster_iters=1, cam_bg_thr=0.99,
               noise_seed=None, res_weights={16: 1, 32: 0})
    assert (gen.timestep, gen.iters, gen.ent, gen.num_clusters, gen.cam_bg_thr) == \
        (0, 0, 0.0, 1, 0.99)
    assert gen.noise_seed is None and gen.extract_kwargs([['cat']])['noise'] is None


def test_given_prompt_names_and_token_offsets_override_the_vocabularys():
    gen = ISeg(prompt_names={'tvmonitor': 'television'}, token_offsets={'television': [0]})
    assert gen.prompt_word('tvmonitor') == 'television'
    assert gen.prompt_word('pottedplant') == 'potted plant'  # the vocabulary's, kept
    kw = gen.extract_kwargs([['tvmonitor', 'pottedplant']])
    assert kw['prompts'][0].startswith('a photograph of potted plant and television and other')
    assert kw['token_offsets']['television'] == [0] and kw['token_offsets']['potted plant'] == [1]


def test_class_order_puts_every_unlisted_class_after_the_listed_ones():
    """Unlisted classes follow all listed ones, even those with a lower dataset index."""
    gen = ISeg(class_order=['tvmonitor', 'train', 'sofa'])
    kw = gen.extract_kwargs([['aeroplane', 'sofa', 'background', 'tvmonitor']])
    assert kw['prompts'][0].startswith('a photograph of tv monitor and sofa and plane and other')
    assert gen.class_order[:4] == ['tvmonitor', 'train', 'sofa', 'background']
    assert gen.config_dict()['class_order'] == gen.class_order


def test_config_dict_records_each_option_that_changes_labels():
    given = dict(timestep=50, noise_seed=7, token_enhance=1.2, res_weights={16: 0.5, 32: 0.5},
                 self_heads=(0,), use_cluster=False, num_clusters=16, cluster_iters=5,
                 kmeans_precision='float32', iters=3, ent=0.1, cam_bg_thr=0.3, mask_size=256,
                 bg_context='sky', cross_heads=None)
    cfg = ISeg(**given).config_dict()
    for key, value in given.items():
        assert cfg[key] == (list(value) if isinstance(value, tuple) else value), key
    assert cfg['method'] == 'iseg' and cfg['classes'] == list(VOC_CLASSES)
    # the released token table is recorded only where it changes tokens (COCO's miscount)
    assert 'token_table' not in cfg
    assert ISeg(preset='wsss_coco', token_table='tokenizer').config_dict()['token_table'] == \
        'tokenizer'


def test_config_dict_records_an_ignore_index_other_than_the_default():
    """Without a class named background, background pixels take ``ignore_index``: generators
    differing only in it had one signature, so a label cache or manifest of one served the
    other; the default (255) is not recorded, so the signatures made before stay valid."""
    options = dict(classes=['cat', 'dog'], vocabulary=None, cross_heads=None, self_heads=None)
    default, other = ISeg(**options).config_dict(), ISeg(**options, ignore_index=200).config_dict()
    assert 'ignore_index' not in default and other.pop('ignore_index') == 200
    assert other == default


def test_a_zero_weighted_resolution_is_neither_captured_nor_read():
    gen = ISeg(res_weights={16: 1.0, 32: 0.0}, cross_heads=None, use_cluster=False)
    assert [r.name for r in gen.capture_spec.requests] == ['iseg_cross16', 'iseg_self64']
    maps, names, _ = two_animals()
    with_32 = gen(maps, None, names)
    del maps.maps['iseg_cross32']
    assert torch.equal(gen(maps, None, names), with_32)


# -- labels --------------------------------------------------------------------------------------
@pytest.mark.parametrize('iters, ent', [(3, 0.1), (0, 0.015)])
def test_labels_equal_the_release_at_other_iters_and_ent(iters, ent):
    """Without clustering, the labels are the transcribed release's at the same iters / ent."""
    maps, names, gt = two_animals()
    gen = ISeg(use_cluster=False, iters=iters, ent=ent)
    ours = gen(maps, torch.zeros(1, 3, 100, 120), names)[0]
    released = iseg_postprocess(*released_args(maps, names, gen), ent=ent, iters=iters,
                                use_cluster=False, out_size=(100, 120))
    assert torch.equal(ours, torch.tensor([0, CAT, DOG])[released])
    assert set(ours.unique().tolist()) == {0, CAT, DOG}


def test_one_cluster_smooths_every_pixel_to_the_image_mean():
    """``num_clusters=1`` seeds one cluster: every pixel gets the mean token vector, the class
    maps are flat, and every pixel is background."""
    maps, names, _ = two_animals()
    labels = ISeg(num_clusters=1, kmeans_precision='float32')(maps, None, names)
    assert labels.shape == (1, 64, 64) and (labels == 0).all()


def test_cluster_iters_and_precision_reach_the_kmeans(monkeypatch):
    import mmdiffseg.generators.iseg_graphs as graphs
    calls = []

    def spy(maps, seeds, iters, precision='float16', **kwargs):
        calls.append((seeds.numel(), iters, precision))
        return real(maps, seeds, iters, precision=precision, **kwargs)
    real = graphs.kl_kmeans
    monkeypatch.setattr(graphs, 'kl_kmeans', spy)
    maps, names, _ = two_animals()
    ISeg(num_clusters=4, cluster_iters=3, kmeans_precision='float32')(maps, None, names)
    assert calls == [(4, 3, 'float32')]  # seeds {0, 32}^2


def test_an_image_without_classes_is_background_at_the_images_size():
    maps, _, _ = two_animals()
    gen = ISeg(use_cluster=False)
    labels = gen(maps, torch.zeros(1, 3, 30, 40), [['background']])
    assert labels.shape == (1, 30, 40) and (labels == 0).all()
    labels = gen(maps, None, [[]])
    assert labels.shape == (1, 64, 64) and (labels == 0).all()


# -- malformed inputs ----------------------------------------------------------------------------
def test_a_class_list_per_image_is_required():
    maps, names, _ = two_animals()
    with pytest.raises(ValueError, match='class names of each of the 1 images, got 2 lists'):
        ISeg(use_cluster=False)(maps, None, names * 2)


def test_a_self_attention_over_no_square_grid_is_refused():
    maps = AttentionMaps({'iseg_self64': torch.rand(1, 12, 12)}, ['a cat'], [{'cat': [2]}])
    with pytest.raises(ValueError, match=r"'iseg_self64'\] must be \(B, N, N\) over a square"):
        ISeg()(maps, None, [['cat']])
    maps.maps['iseg_self64'] = torch.rand(1, 16, 9)
    with pytest.raises(ValueError, match=r'square grid, got \(1, 16, 9\)'):
        ISeg()(maps, None, [['cat']])


def test_an_offset_past_a_words_last_token_is_refused():
    """A word of one token read at offset 1 names the word, its offsets and the sample."""
    maps, names, _ = two_animals()
    gen = ISeg(use_cluster=False, token_offsets={'cat': [1]})
    with pytest.raises(ValueError, match=r"token_offsets\['cat'\] = \[1\] but 'cat' has 1 tok"):
        gen(maps, None, names)


def test_the_device_check_refuses_graphs_off_cuda_before_any_work():
    """``check_device`` (run before the engine starts) refuses the backend and the noise draw
    that need CUDA, naming the option."""
    cpu = torch.device('cpu')
    ISeg(postprocess_backend='auto').check_device(cpu)
    with pytest.raises(ValueError, match=r"ISeg\(postprocess_backend='graph'\) needs CUDA"):
        ISeg(postprocess_backend='graph').check_device(cpu)
    with pytest.raises(ValueError, match="noise_draw='cuda_float16'"):
        ISeg(noise_draw='cuda_float16').check_device(cpu)


def test_a_padding_slot_takes_no_pixel_at_any_output_size(monkeypatch):
    """A sample with fewer classes than the batch's widest has padding slots; whatever their
    maps hold, neither forward nor labels_at (a size per sample) gives them a pixel."""
    cams = torch.zeros(2, 2, 512, 512)
    cams[0, 0, :, :256] = 1.0          # sample 0: one class, left half
    cams[0, 1, :, 256:] = 1.0          # its padding slot scores 1 on the right half
    cams[1, 0, :256] = cams[1, 1, 256:] = 1.0
    table = torch.tensor([[0, CAT, 255], [0, CAT, DOG]])
    valid = torch.tensor([[True, False], [True, True]])
    gen = ISeg()
    monkeypatch.setattr(ISeg, 'check_sizes', lambda self, maps, sizes: None)
    monkeypatch.setattr(ISeg, '_class_maps', lambda self, maps, names: (cams, table, valid))
    names = [['cat'], ['cat', 'dog']]
    images = torch.zeros(2, 3, 64, 64)
    for labels in (gen.forward(None, images, names),
                   gen.labels_at(None, images, names, [(64, 64)] * 2)):
        assert set(labels[0].unique().tolist()) == {0, CAT}
        assert set(labels[1].unique().tolist()) == {CAT, DOG}
