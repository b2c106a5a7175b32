"""iSeg: the released float16 k-means against a transcription of the released code, and running on
SD 1.x (the released head lists are SD 2.1-base's): a preset that works, an error that says how."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sample_data import REPO, shared_path
from mmdiffseg.apis.io import UserInputError
from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
from mmdiffseg.attention.unet_layers import check_capture_on_config
from mmdiffseg.generators import ISeg
from mmdiffseg.generators.class_names import VOC_CLASSES, prompt_names
from mmdiffseg.generators.iseg_aggregation import aggregate_cross
from mmdiffseg.generators.kmeans import grid_seeds, kl_kmeans
from mmdiffseg.generators.testing import attention_from_labels, load_label_png
from mmdiffseg.generators.transcriptions import iseg_clusters

sys.path.insert(0, str(Path(__file__).parents[1] / 'tools'))
from e2e_helpers import run_tool  # noqa: E402

VOC_WORDS = prompt_names(VOC_CLASSES, 'voc')


def aggregated_cross(name, noise):
    """``(1, 4096, 77)`` cross-attention of a VOC sample as ISeg aggregates it (16/32 -> 64)."""
    gt = load_label_png(shared_path('voc2012_val_samples', 'SegmentationClass', f'{name}.png'))
    maps, _ = attention_from_labels(gt[None], VOC_WORDS, noise=noise, self_resolutions=(),
                                    cross_resolutions=(32, 16), seed=0)
    for r in (16, 32):
        maps.maps[f'iseg_cross{r}'] = maps.maps.pop(f'cross{r}')
    return aggregate_cross(maps, ISeg().res_weights, 1, 64)


def test_float16_kmeans_reproduces_the_released_clusters():
    """Those of the released formulation on our float32 maps (the transcription), exactly, on VOC
    ground-truth attention at three noise levels; the float32 distance does not
    (it moves 29-239 of the 4096 pixels on the ten VOC samples at noise 0.1)."""
    moved = []
    for name, noise in (('voc_val_0', 0.1), ('voc_val_166', 0.15), ('voc_val_60', 0.3)):
        cross = aggregated_cross(name, noise)
        released, count = iseg_clusters(cross[0].T.reshape(-1, 64, 64), torch.float16)
        for precision in ('float16', 'float32'):
            ours = kl_kmeans(cross, grid_seeds(64, 32), 20, precision=precision)[0]
            same_ids = torch.unique(ours, return_inverse=True)[1]  # released ids are compacted
            if precision == 'float16':
                assert len(ours.unique()) == count
                assert torch.equal(same_ids, released), (name, noise)
            else:
                moved.append(int((same_ids != released).sum()))
    assert max(moved) > 0, moved


def test_kmeans_precision_is_checked_and_recorded():
    assert ISeg().config_dict()['kmeans_precision'] == 'float16'
    with pytest.raises(ValueError, match=r"kmeans_precision.*'float16', 'float32'.*'half'"):
        ISeg(kmeans_precision='half')


def test_map_precision_is_checked_and_recorded_where_it_changes_labels_of_before():
    """The default float16 is recorded (its labels are new); float32, the labels made before the
    option, is not, so caches and folders made then keep their signature."""
    assert ISeg().config_dict()['map_precision'] == 'float16'
    assert 'map_precision' not in ISeg(map_precision='float32').config_dict()
    assert ISeg.from_preset('wsss_coco').map_precision == 'float16'
    with pytest.raises(ValueError, match=r"map_precision must be one of .*'float16', 'float32'.*"
                                         r"got 'half'"):
        ISeg(map_precision='half')


def test_noise_draw_is_checked_passed_to_the_engine_and_recorded_where_not_the_default():
    """'cuda_float16' (the release's noise) reaches extract and the signature; the default 'cpu'
    stays out of it, so caches made before the option keep their key."""
    assert ISeg().extract_kwargs([['cat']])['noise_draw'] == 'cpu'
    assert 'noise_draw' not in ISeg().config_dict()
    released = ISeg(noise_draw='cuda_float16')
    assert released.extract_kwargs([['cat']])['noise_draw'] == 'cuda_float16'
    assert released.config_dict()['noise_draw'] == 'cuda_float16'
    with pytest.raises(ValueError, match=r"noise_draw='cuda': one of \('cpu', 'cuda_float16'\)"):
        ISeg(noise_draw='cuda')


# -- SD 1.x ----------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def tiny_sd15():
    return cached_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-v1-5'))


@pytest.fixture(scope='module')
def one_image(tmp_path_factory):
    root = tmp_path_factory.mktemp('sd1x')
    (root / 'images').mkdir()
    (root / 'images' / 'voc_val_582.png').symlink_to(
        shared_path('voc2012_val_samples', 'JPEGImages', 'voc_val_582.png'))
    (root / 'labels.json').write_text(json.dumps({'voc_val_582': ['person', 'motorbike']}))
    return root


def test_released_head_lists_on_sd1x_stop_naming_the_fix(tiny_sd15, one_image, tmp_path):
    with pytest.raises(UserInputError) as error:
        run_tool('pseudo_label', one_image / 'images', '--labels', one_image / 'labels.json',
                 '--classes', 'voc', '--method', 'iseg', '--model', tiny_sd15, '--out', tmp_path)
    assert 'cross_heads=None self_heads=None' in str(error.value)
    assert 'configs/iseg/iseg_wsss_voc_sd1x.py' in str(error.value)
    assert not list(tmp_path.rglob('*.png'))
    with pytest.raises(ValueError, match=r'have 40 heads.*cross_heads=None self_heads=None'):
        check_capture_on_config(shared_path('sd_configs', 'stable-diffusion-v1-5'),
                                ISeg.from_preset('wsss_voc').capture_spec)


def test_the_sd1x_preset_labels_images_on_sd1x(tiny_sd15, one_image, tmp_path):
    for name in ('wsss_voc_sd1x', 'ovs_voc_sd1x'):
        check_capture_on_config(shared_path('sd_configs', 'stable-diffusion-v1-5'),
                                ISeg.from_preset(name).capture_spec)
    run_tool('pseudo_label', one_image / 'images', '--labels', one_image / 'labels.json',
             '--classes', 'voc', '--config', REPO / 'configs/iseg/iseg_wsss_voc_sd1x.py',
             '--model', tiny_sd15, '--out', tmp_path, '--device', 'cpu')
    labels = np.array(Image.open(tmp_path / 'SegmentationClass' / 'voc_val_582.png'))
    assert labels.shape == (513, 513)
    assert set(np.unique(labels)) <= {0, VOC_CLASSES.index('motorbike'),
                                      VOC_CLASSES.index('person')}
    header = json.loads((tmp_path / 'manifest.jsonl').read_text().splitlines()[0])
    assert header['generator']['cross_heads'] is None and header['generator']['self_heads'] is None


def test_own_head_lists_per_resolution_are_read_and_checked():
    """``cross_heads={resolution: heads}``: indices into the layer-major heads of that
    resolution's layers (keys as a config or a JSON header give them); a resolution left out
    averages all its heads; other resolutions and forms are refused."""
    gen = ISeg.from_preset('wsss_voc', cross_heads={'16': [0, 41], 32: (3,)})
    heads = {r.name: r.heads for r in gen.capture_spec.requests}
    assert (heads['iseg_cross16'], heads['iseg_cross32']) == ((0, 41), (3,))
    check_capture_on_config(shared_path('sd_configs', 'stable-diffusion-2-1-base'),
                            gen.capture_spec)  # 5 layers x 20 heads at 16x16
    with pytest.raises(ValueError, match='have 40 heads'):  # SD 1.5: 5 layers x 8 heads
        check_capture_on_config(shared_path('sd_configs', 'stable-diffusion-v1-5'),
                                gen.capture_spec)
    heads = {r.name: r.heads for r in ISeg(cross_heads={16: [1]}).capture_spec.requests}
    assert (heads['iseg_cross16'], heads['iseg_cross32']) == ((1,), None)
    with pytest.raises(ValueError, match=r'cross_heads has resolutions \[16, 64\]; only '
                                         r'\[16, 32\] are read'):
        ISeg(cross_heads={16: [1], 64: [0]})
    with pytest.raises(ValueError, match=r"cross_heads must be None, 'voc' or"):
        ISeg(cross_heads='coco')
    # numpy indices become ints: the settings stay JSON (label caches and headers record them)
    gen = ISeg(cross_heads={16: np.array([1, 2])})
    assert json.loads(json.dumps(gen.config_dict()))['cross_heads'] == {'16': [1, 2]}


def test_the_self_attention_is_read_where_the_release_reads_it():
    """The released code takes self-attention from the 64x64 up block's second transformer
    (``up_blocks[3].attentions[1].attn1``), heads 1 and 2, in every preset."""
    for name in ('wsss_voc', 'wsss_coco', 'ovs_context'):
        [req] = [r for r in ISeg.from_preset(name).capture_spec.requests
                 if r.name == 'iseg_self64']
        assert req.layers == ('up_blocks.3.attentions.1.transformer_blocks.0.attn1',)
        assert req.heads == (1, 2)


def test_the_head_layout_fix_names_the_keys_where_they_are_given():
    """Without a config key: the tools' options and where a training config keeps them; with
    one (pre-flight of a config): that key's options only."""
    tools = ISeg.head_layout_fix()
    assert tools.startswith('--cfg-options cross_heads=None self_heads=None (the mean of all '
                            'heads) with the tools; in a training config the same keys under')
    keyed = ISeg.head_layout_fix('model.gen')
    assert keyed.startswith('--cfg-options model.gen.cross_heads=None model.gen.self_heads=None '
                            '(the mean of all heads); for SD 1.x the presets')
    assert 'with the tools' not in keyed


def test_released_self_heads_on_sd1x_are_noted_with_the_fix(tiny_sd15):
    """The COCO / Context presets' self_heads (1, 2) were picked among SD 2.1-base's 5 heads of
    the 64x64 layer; on SD 1.x (8 heads) they are valid indices of other heads, so they ran
    without a word (the VOC presets' cross-head lists stop): a warning names self_heads=None.
    SD 2.1-base's layout and averaged heads get none."""
    from types import SimpleNamespace as Layer

    from mmdiffseg.apis.builders import warn_model_notes
    from mmdiffseg.attention.engine import DiffusionAttentionEngine
    from mmdiffseg.generators.iseg import SELF_LAYER
    engine = DiffusionAttentionEngine.from_pretrained(str(tiny_sd15))
    for preset in ('wsss_coco', 'ovs_context', 'ovs_coco_object'):
        [note] = warn_model_notes(engine, ISeg.from_preset(preset), 512)
        assert note.startswith('ISeg: self_heads=(1, 2) are heads the release picked among the 5 '
                               f"of SD 2.1-base's {SELF_LAYER}; this U-Net's has 8, where they "
                               'are other heads: set self_heads=None')
    assert warn_model_notes(engine, ISeg.from_preset('wsss_voc_sd1x'), 512) == []
    chosen = ISeg.from_preset('wsss_coco', self_heads=(0, 3))  # the user's own heads
    assert warn_model_notes(engine, chosen, 512) == []
    sd21 = [Layer(name=SELF_LAYER, kind='self', resolution=64, heads=5)]
    assert ISeg.from_preset('wsss_coco').model_notes(sd21) == []
