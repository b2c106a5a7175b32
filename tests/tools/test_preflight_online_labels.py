"""Pre-flight of the online labels' training pipeline through ``preflight.check``: a label cache
folder that cannot be written, images decoded otherwise than for the labels, and images whose
class names overflow their prompt."""
from apis.unwritable import readonly_folder
from e2e_helpers import set_label_cache
from test_preflight import tiny_online_config, tiny_sd  # noqa: F401 (a fixture)

from mmdiffseg import preflight


def test_a_label_cache_folder_that_cannot_be_written_is_named(tmp_path, tiny_sd):
    """A read-only cache_dir (or a file in its place) stopped training and the prefill at their
    first label with a traceback, after the model loaded; a cache still to be made is probed in
    the folder above it, and the probe leaves nothing behind."""
    cfg = tiny_online_config(tmp_path, tiny_sd)
    key = 'train_dataloader.dataset.pipeline.2.cache.cache_dir'
    with readonly_folder(tmp_path / 'ro') as folder:
        set_label_cache(cfg, dict(cfg.train_dataloader.dataset.pipeline[2].cache,
                                  cache_dir=str(folder / 'cache')))
        for mode in ('train', 'prefill'):
            (item,) = preflight.check(cfg, mode)
            assert item.what.startswith(f'label cache folder {folder}/cache cannot be written '
                                        f'({folder}: ')
            assert item.where == [key] and item.fix == (
                f'--cfg-options {key}=<a folder you can write>')
        assert preflight.check(cfg, 'test') == []  # testing writes no label
    (tmp_path / 'file').write_text('')
    set_label_cache(cfg, dict(cfg.train_dataloader.dataset.pipeline[2].cache,
                              cache_dir=str(tmp_path / 'file' / 'cache')))
    (item,) = preflight.check(cfg, 'train')
    assert item.what == f'label cache folder {tmp_path}/file/cache: {tmp_path}/file is a file'
    set_label_cache(cfg, dict(cfg.train_dataloader.dataset.pipeline[2].cache,
                              cache_dir=str(tmp_path / 'new' / 'cache')))
    assert preflight.check(cfg, 'train') == []
    assert not list(tmp_path.rglob('.mmdiffseg-write-test*')) and not (tmp_path / 'new').exists()


def test_images_decoded_otherwise_than_for_the_labels_are_refused(tmp_path, tiny_sd):
    """Online labels are made on images decoded as LoadImageFromFile's defaults decode them; a
    pipeline that ignores the EXIF orientation (or decodes with Pillow) would train each label
    against another picture of its image, silently for a square one."""
    cfg = tiny_online_config(tmp_path, tiny_sd)
    key = 'train_dataloader.dataset.pipeline.0'
    assert cfg.train_dataloader.dataset.pipeline[0].type == 'LoadImageFromFile'
    loading = cfg.train_dataloader.dataset.pipeline[0]
    loading.update(color_type='color_ignore_orientation', imdecode_backend='pillow')
    (item,) = preflight.check(cfg, 'train')
    assert item.where == [key] and item.what.startswith(
        f"{key} decodes images with {{'color_type': 'color_ignore_orientation', "
        "'imdecode_backend': 'pillow'}, but the generated labels were made on images decoded")
    assert item.fix == (f"leave color_type and imdecode_backend of {key} at the defaults "
                        "(color_type='color', imdecode_backend='cv2')")
    loading.update(color_type='color', imdecode_backend='cv2')
    assert preflight.check(cfg, 'train') == []
    cfg.test_dataloader.dataset.pipeline[0].update(imdecode_backend='pillow')  # real labels
    assert preflight.check(cfg, 'test') == []


def test_loaders_derived_from_load_image_from_file_are_checked_too(tmp_path, tiny_sd):
    """LoadImageTFDecode (DiffSeg's COCO decoding: EXIF orientation ignored) passed the check,
    which read only steps typed LoadImageFromFile: an upside-down (EXIF 3) image was labelled
    the other way up, with no size check to catch it. Derived loaders are read as well."""
    cfg = tiny_online_config(tmp_path, tiny_sd)
    key = 'train_dataloader.dataset.pipeline.0'
    cfg.train_dataloader.dataset.pipeline[0] = dict(type='LoadImageTFDecode')
    (item,) = preflight.check(cfg, 'train')
    assert item.where == [key] and item.what.startswith(
        f"{key} is LoadImageTFDecode, which decodes JPEGs as DiffSeg's release read COCO (EXIF "
        'orientation ignored')
    assert item.fix.startswith(f"load with dict(type='LoadImageFromFile') at {key}")
    cfg.train_dataloader.dataset.pipeline[0] = dict(type='LoadImageFromNDArray',
                                                    color_type='unchanged')
    (item,) = preflight.check(cfg, 'train')
    assert item.what.startswith(f"{key} decodes images with {{'color_type': 'unchanged'}}")


def test_training_images_with_more_classes_than_their_prompt_holds_are_named(tmp_path,
                                                                             tiny_sd):
    """An online generator reads each class off its prompt's first 77 tokens; an image naming
    more classes than fit (some 30 ADE20K names in an iSeg prompt; here a long template) would
    stop training or the prefill at that image, hours in: named before anything starts."""
    import json

    from e2e_helpers import VOC_IMAGES
    cfg = tiny_online_config(tmp_path, tiny_sd)
    labels = {name: ['aeroplane'] for name in VOC_IMAGES}
    labels[VOC_IMAGES[1]] = ['bird', 'boat', 'bottle', 'bus', 'car', 'cat']
    (tmp_path / 'labels.json').write_text(json.dumps(labels))
    cfg.train_dataloader.dataset.pipeline[1].ann_file = str(tmp_path / 'labels.json')
    cache = cfg.train_dataloader.dataset.pipeline[2].cache
    generator = dict(cache.generator, prompt_template='very ' * 68 + 'a photograph of {classes} '
                     'and {bg_context}')
    set_label_cache(cfg, dict(cache, generator=generator))
    for mode in ('train', 'prefill'):
        (item,) = preflight.check(cfg, mode)
        assert item.where == ['train_dataloader.dataset.pipeline.1']
        assert item.what.startswith(
            f"1 training image(s) name more classes than their prompt holds, e.g. {VOC_IMAGES[1]}: "
            "class 'bottle' lies beyond the first 77 tokens of its prompt")
        assert item.fix.startswith(f'list fewer classes for them in {tmp_path}/labels.json')
    assert preflight.check(cfg, 'test') == []  # testing makes no label
    set_label_cache(cfg, cache)  # the shipped template: six classes fit
    assert preflight.check(cfg, 'train') == []


def test_offline_generated_label_datasets_have_their_decoding_checked_too():
    """Labels made by pseudo_label.py / synthesize.py were made on images decoded with
    LoadImageFromFile's defaults: a generated-label dataset (no LoadPseudoLabel step) loading
    its images otherwise is named as an online one is; a dataset of real masks is not."""
    from mmdiffseg.preflight_decoding import check_image_decoding
    for loader in (dict(type='LoadImageTFDecode'),
                   dict(type='LoadImageFromFile', imdecode_backend='pillow')):
        steps = [loader, dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
        (item,) = check_image_decoding(dict(type='PseudoLabelVOCDataset', pipeline=steps), 'd')
        assert item.where == ['d.pipeline.0']
        assert check_image_decoding(dict(type='PascalVOCDataset', pipeline=steps), 'd') == []
