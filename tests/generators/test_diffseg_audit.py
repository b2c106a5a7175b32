"""DiffSeg: released defaults, option checks, labelled-mode call checks, config round trip."""
import pytest
import torch

from diffseg_cases import VOC_CLASSES
from mmdiffseg.attention.maps import AttentionMaps
from mmdiffseg.generators import DiffSeg


def uniform_maps(resolutions=(16, 8), batch=1):
    return AttentionMaps({f'self{r}': torch.full((batch, r * r, r * r), 1.0 / (r * r))
                          for r in resolutions}, image_size=(32, 32))


def test_defaults_are_the_released_coco_stuff_settings():
    """ALGORITHMS.md 1: 16x16 anchors, three passes at KL 1.1, no refinement, float16 merge."""
    generator = DiffSeg()
    assert tuple(generator.kl_thresholds) == (1.1, 1.1, 1.1)
    assert generator.num_points == 16 and generator.refine is False
    assert generator.merge_precision == 'float16' and generator.grid_size == 64


@pytest.mark.parametrize('kwargs,name', [
    (dict(output_size=(64, 64, 3)), 'output_size'),
    (dict(timestep=-1), 'timestep'),
    (dict(resolutions=()), 'resolutions'),
    (dict(num_points=1), 'num_points'),
])
def test_bad_options_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DiffSeg(**kwargs)


def test_the_merging_grid_is_the_largest_resolution_in_any_order():
    """Resolutions listed small-first: the grid is still the largest (16), and uniform attention
    there is one segment."""
    generator = DiffSeg(resolutions=(8, 16), num_points=4)
    assert generator.grid_size == 16
    labels = generator(uniform_maps((8, 16)))
    assert labels.shape == (1, 32, 32) and labels.eq(0).all()


def test_labelled_mode_needs_one_class_name_list_per_image():
    generator = DiffSeg(classes=VOC_CLASSES, resolutions=(16, 8), num_points=4,
                        cross_resolutions=(16, ))
    with pytest.raises(ValueError, match='labelled mode'):
        generator(uniform_maps())
    with pytest.raises(ValueError, match='2 class-name lists for a batch of 1'):
        generator(uniform_maps(), class_names=[['cat'], ['dog']])


def test_timestep_and_ignore_index_reach_the_extraction_and_the_config():
    generator = DiffSeg(timestep=50, ignore_index=200)
    assert generator.extract_kwargs()['timestep'] == 50
    config = generator.config_dict()
    assert config['timestep'] == 50 and config['ignore_index'] == 200
