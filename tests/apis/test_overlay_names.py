"""The names the overlays give label values: every DiffSeg segment id 0..254 is a segment of
its own, 255 is 'unsure'."""
import numpy as np

from mmdiffseg.apis.folders import IGNORE_COLOR, label_palette
from mmdiffseg.apis.visualize import Overlayer, segment_classes


def test_segment_ids_0_to_254_are_named_and_255_is_unsure():
    """segment_classes() names the 255 ids a label PNG can hold besides 255; an unnamed
    overlay draws segment 254 in its own colour, not the black of a gap."""
    names = segment_classes()
    assert len(names) == 255 and names[0] == '0' and names[-1] == '254'
    overlay = Overlayer(None)
    assert overlay.classes[:255] == names and overlay.classes[255] == 'unsure'
    assert list(overlay.palette[254]) == list(label_palette(None)[254])
    assert list(overlay.palette[255]) == list(IGNORE_COLOR)


def test_segment_ids_are_coloured_far_apart():
    """Hashed names coloured ids 5 and 13 18 RGB units apart (the same mauve at half alpha):
    PASCAL's colour map from its colour 1 keeps every two of the 255 ids >= 32 apart, the ids a
    DiffSeg image mostly has (0..15) >= 64, and none nearer the unsure colour than 32."""
    palette = np.array(label_palette(None), dtype=float)
    assert palette.shape == (255, 3)
    assert palette[:3].tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0]]
    gaps = np.linalg.norm(palette[:, None] - palette[None], axis=-1) + np.eye(255) * 1e9
    assert gaps.min() >= 32 and gaps[:16, :16].min() >= 64
    assert np.linalg.norm(palette - np.array(IGNORE_COLOR), axis=1).min() >= 32


def test_a_black_legend_swatch_has_a_light_frame():
    """VOC's background is black: its 12 px swatch is ringed by one light (160) pixel each side,
    so it shows on the dark (32) strip."""
    from mmdiffseg.apis.visualize import legend_strip
    strip = legend_strip([('background', [0, 0, 0])], 200)
    rows, cols = np.nonzero((strip == 0).all(axis=2))
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    assert (bottom - top, right - left) == (11, 11)
    assert (strip[top:bottom + 1, left:right + 1] == 0).all()
    ring = strip[top - 1:bottom + 2, left - 1:right + 2].copy()
    ring[1:-1, 1:-1] = 160
    assert (ring == 160).all()


def test_no_legend_entries_make_no_strip_rows():
    """Nothing to name (e.g. only values past the classes): the strip has no rows."""
    from mmdiffseg.apis.visualize import legend_strip
    assert legend_strip([], 100).shape == (0, 100, 3)


def test_an_item_whose_image_is_gone_is_left_out(tmp_path):
    """Two finished items, one image deleted since: one tile, no error."""
    import json

    from mmdiffseg.apis.folders import IMAGE_DIR, MASK_DIR, encode_jpeg, encode_label_png
    from mmdiffseg.apis.manifest import MANIFEST_NAME
    from mmdiffseg.apis.visualize import contact_sheet
    (tmp_path / IMAGE_DIR).mkdir()
    (tmp_path / MASK_DIR).mkdir()
    for item_id in 'ab':
        (tmp_path / IMAGE_DIR / f'{item_id}.jpg').write_bytes(
            encode_jpeg(np.full((8, 8, 3), 255)))
        (tmp_path / MASK_DIR / f'{item_id}.png').write_bytes(
            encode_label_png(np.ones((8, 8), np.uint8), label_palette(None)))
    (tmp_path / MANIFEST_NAME).write_text(''.join(
        json.dumps(line) + '\n' for line in (dict(classes=None), dict(id='a'), dict(id='b'))))
    (tmp_path / IMAGE_DIR / 'a.jpg').unlink()
    assert contact_sheet(tmp_path, thumb=16).shape == (16, 16, 3)


def test_a_one_pixel_image_is_drawn_in_its_labels_colour():
    """A 1x1 image stopped segment.py and the contact sheet (mmseg's drawing took its one-pixel
    mask as the index 1): it is drawn, its pixel blended with its class's colour as a larger
    image's pixels are."""
    overlay = Overlayer(['background', 'cat'])
    grey = np.full((2, 3, 3), 100, np.uint8)
    wide = overlay(grey, np.ones((2, 3), np.uint8), with_labels=False)
    one = overlay(grey[:1, :1], np.ones((1, 1), np.uint8), with_labels=False)
    assert one.shape == (1, 1, 3)
    np.testing.assert_array_equal(one[0, 0], wide[0, 0])
    assert (one[0, 0] != 100).any()


def test_overlays_are_drawn_on_every_rank(monkeypatch):
    """segment.py under torchrun: mmseg's add_datasample / get_image draw on rank 0 only, so
    rank 1 crashed on a None overlay; each rank draws the same picture."""
    import mmengine.dist.utils
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    labels = np.zeros((24, 32), np.int64)
    labels[:12] = 1
    labels[20:] = 255
    overlayer = Overlayer(['background', 'cat'])
    first = overlayer(rgb, labels, with_labels=False)
    colours = np.zeros_like(rgb)  # each class in its palette colour, unsure (255) as in PNGs
    colours[labels == 1] = overlayer.palette[1]
    colours[labels == 0] = overlayer.palette[0]
    colours[labels == 255] = IGNORE_COLOR  # mmseg leaves it black, like VOC's background
    np.testing.assert_array_equal(first, (rgb * 0.5 + colours * 0.5).astype(np.uint8))
    monkeypatch.setattr(mmengine.dist.utils, 'is_main_process', lambda: False)
    np.testing.assert_array_equal(overlayer(rgb, labels, with_labels=False), first)
    named = overlayer(rgb, labels)  # with the class names written on it, on this rank too
    assert named.shape == rgb.shape and (named != first).any()
