"""The contact sheet of a tool's folder: which items it shows (each once, images found through
their record), how the grid is laid out, and what its legend names."""
import json

import numpy as np
import pytest

from mmdiffseg.apis.folders import (IGNORE_COLOR, IMAGE_DIR, MASK_DIR, encode_jpeg,
                                    encode_label_png, palette_for)
from mmdiffseg.apis.io import UserInputError
from mmdiffseg.apis.manifest import MANIFEST_NAME
from mmdiffseg.apis.visualize import LEGEND_WIDTH, contact_sheet, legend_strip

CLASSES = ['background', 'cat']


def _folder(folder, labels, classes=CLASSES, image=None, records=None):
    """A tool's folder: per id a white JPEG (``image`` shape, default the label's) and its label
    PNG; the manifest lists ``records`` (default one per id)."""
    (folder / IMAGE_DIR).mkdir(parents=True)
    (folder / MASK_DIR).mkdir()
    for item_id, label in labels.items():
        label = np.asarray(label, np.uint8)
        shape = image or label.shape
        (folder / IMAGE_DIR / f'{item_id}.jpg').write_bytes(encode_jpeg(np.full((*shape, 3), 255)))
        (folder / MASK_DIR / f'{item_id}.png').write_bytes(
            encode_label_png(label, palette_for(classes or ['0', '1'])))
    lines = [dict(classes=classes)] + (records or [dict(id=i) for i in labels])
    (folder / MANIFEST_NAME).write_text(''.join(json.dumps(line) + '\n' for line in lines))
    return folder


def _colours(array):
    return {tuple(c) for c in array.reshape(-1, 3)}


def test_an_item_redone_is_shown_once(tmp_path):
    """A resumed run appends a second record for a redone item: one tile per item."""
    ones = np.ones((8, 8))
    folder = _folder(tmp_path, dict(a=ones, b=ones),
                     records=[dict(id='a'), dict(id='a'), dict(id='b')])
    assert contact_sheet(folder, thumb=16, legend=False).shape == (16, 32, 3)


def test_a_stopped_distributed_run_is_shown_from_its_rank_manifests(tmp_path):
    """Ranks write manifest.rank<r>.jsonl, merged into manifest.jsonl when the run ends: a
    folder of a stopped run was refused as 'not a folder written by' a tool."""
    ones = np.ones((8, 8))
    folder = _folder(tmp_path, dict(a=ones, b=ones, c=ones))
    lines = (folder / MANIFEST_NAME).read_text().splitlines(keepends=True)
    (folder / 'manifest.rank0.jsonl').write_text(''.join(lines[:2]))  # header, a
    (folder / 'manifest.rank1.jsonl').write_text(lines[0] + ''.join(lines[2:]))  # header, b, c
    (folder / MANIFEST_NAME).unlink()
    assert contact_sheet(folder, thumb=16, legend=False).shape == (16, 48, 3)


def test_a_sheet_drawn_while_the_ranks_manifests_are_merged_reads_the_merged_one(
        tmp_path, monkeypatch):
    """The run merges its rank files into manifest.jsonl, then removes them: a rank file
    listed just before its removal is listed again, not a FileNotFoundError."""
    from mmdiffseg.apis import visualize
    ones = np.ones((8, 8))
    folder = _folder(tmp_path, dict(a=ones, b=ones))
    listings = [[folder / 'manifest.rank0.jsonl']]  # gone by the time it is read
    real = visualize.manifest_files
    monkeypatch.setattr(visualize, 'manifest_files',
                        lambda path: listings.pop() if listings else real(path))
    assert contact_sheet(folder, thumb=16, legend=False).shape == (16, 32, 3)


def test_images_outside_the_folder_are_found_through_their_record(tmp_path):
    """pseudo_label / segment folders hold no JPEGImages: the image is the recorded input path,
    relative to the folder."""
    folder = _folder(tmp_path / 'out', dict(a=np.ones((8, 8))),
                     records=[dict(id='a', image='../inputs/a.png')])
    (tmp_path / 'inputs').mkdir()
    (folder / IMAGE_DIR / 'a.jpg').rename(tmp_path / 'inputs' / 'a.png')
    sheet = contact_sheet(folder, thumb=16, legend=False)
    assert sheet.shape == (16, 16, 3) and sheet[8:].mean() > 100


def test_items_fill_rows_of_cols_tiles(tmp_path):
    """3 items in 2 columns: 2 rows, the last tile of the second row empty."""
    folder = _folder(tmp_path, {k: np.ones((8, 8)) for k in 'abc'})
    sheet = contact_sheet(folder, cols=2, thumb=16, legend=False)
    assert sheet.shape == (32, 32, 3)
    assert sheet[16:, :16].max() > 100 and (sheet[16:, 16:] == 0).all()


def test_an_image_larger_than_its_label_is_scaled_to_the_label(tmp_path):
    """A 16x32 image with its 8x16 label (labels at a lower resolution): one 2:1 tile, black
    bars above and below."""
    folder = _folder(tmp_path, dict(a=np.ones((8, 16))), image=(16, 32))
    tile = contact_sheet(folder, thumb=16, legend=False)
    assert tile.shape == (16, 16, 3)
    assert (tile[:4] == 0).all() and (tile[13:] == 0).all() and (tile[5:11, 12:] > 60).all()


def test_segment_ids_get_no_legend(tmp_path):
    """Unlabelled segments (classes null): a colour names no class, so no legend strip."""
    folder = _folder(tmp_path, dict(a=np.eye(8)), classes=None)
    assert contact_sheet(folder, thumb=16).shape == (16, 16, 3)


def test_the_legend_names_the_classes_of_every_item_and_unsure(tmp_path):
    """'cat' only in the first item, unsure (255) only in the second, below its first rows:
    both in the legend."""
    first, second = np.ones((8, 8)), np.zeros((8, 8))
    second[-2:] = 255
    strip = contact_sheet(_folder(tmp_path, dict(a=first, b=second)), thumb=16)[16:]
    assert tuple(palette_for(CLASSES)[1]) in _colours(strip)
    assert IGNORE_COLOR in _colours(strip)


def test_values_past_the_classes_are_not_in_the_legend(tmp_path):
    """A label value without a class name (5 of 2 classes) adds no legend entry."""
    plain = np.ones((8, 8))
    odd = plain.copy()
    odd[0, 0] = 5
    sheets = [contact_sheet(_folder(tmp_path / name, dict(a=label)), thumb=16)
              for name, label in (('plain', plain), ('odd', odd))]
    np.testing.assert_array_equal(sheets[0][16:], sheets[1][16:])


@pytest.mark.parametrize('cols', [1, 3])
def test_tiles_go_along_rows(tmp_path, cols):
    """Item k at row k // cols, column k % cols: the white image in the last item's tile."""
    labels = {k: np.ones((8, 8)) for k in 'abc'}
    folder = _folder(tmp_path, labels)
    (folder / IMAGE_DIR / 'a.jpg').write_bytes(encode_jpeg(np.zeros((8, 8, 3))))
    (folder / IMAGE_DIR / 'b.jpg').write_bytes(encode_jpeg(np.zeros((8, 8, 3))))
    sheet = contact_sheet(folder, cols=cols, thumb=16, legend=False)
    r, c = divmod(2, cols)
    assert sheet[r * 16 + 8, c * 16 + 8].min() > 100
    assert sheet[8, 8].max() < 100


def test_a_legend_name_too_long_is_cut_inside_the_strip():
    """Nothing of a name is drawn in the strip's right margin (4 px)."""
    from mmdiffseg.apis.visualize import legend_strip
    strip = legend_strip([('m' * 200, [10, 200, 30])], 100)
    assert strip.shape == (18 + 4, 100, 3)
    assert (strip[:, -4:] == 32).all() and strip[:, 30:96].max() > 200


@pytest.mark.parametrize('damage', ['label cut short', 'colour label', 'image cut short'])
def test_an_item_damaged_since_it_was_written_is_named_with_the_fix(tmp_path, damage):
    """A traceback before (OSError from the label, ItemFailed from the image); now the one-line
    refusal the tools print, naming the item, its label and how to remake it."""
    ones = np.ones((8, 8))
    folder = _folder(tmp_path, dict(a=ones))
    mask, image = folder / MASK_DIR / 'a.png', folder / IMAGE_DIR / 'a.jpg'
    if damage == 'colour label':
        mask.write_bytes(encode_jpeg(np.full((8, 8, 3), 9)))  # any RGB file under the name
    else:
        path = mask if damage == 'label cut short' else image
        path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserInputError, match=(
            rf"^contact sheet of {folder}: cannot draw item 'a' \(.+\); remove its label {mask} "
            'and rerun the tool to remake it$')):
        contact_sheet(folder, thumb=16, legend=False)


def test_an_image_of_another_shape_than_its_label_is_named_not_stretched(tmp_path):
    """An input image replaced since it was labelled (300x200 under a 513x513 label) was drawn
    stretched under the old labels, silently."""
    folder = _folder(tmp_path, dict(a=np.ones((16, 16))), image=(20, 30))
    with pytest.raises(UserInputError, match=r"item 'a': its image .*a.jpg is 30x20 but its "
                                             r'label .*a.png 16x16, another shape: one of them '
                                             'changed since the label was made; remove the '
                                             'label'):
        contact_sheet(folder, thumb=16, legend=False)


def test_input_images_not_found_are_named_not_passed_over(tmp_path, monkeypatch):
    """A pseudo_label folder moved away from its inputs was 'no finished items to show'; one
    image missing left its item out silently."""
    folder = _folder(tmp_path / 'out', dict(a=np.ones((8, 8)), b=np.ones((8, 8))),
                     records=[dict(id='a', image='../inputs/a.png'),
                              dict(id='b', image='../inputs/b.png')])
    (tmp_path / 'inputs').mkdir()
    (folder / IMAGE_DIR / 'a.jpg').unlink()
    (folder / IMAGE_DIR / 'b.jpg').unlink()
    with pytest.raises(UserInputError, match=r'2 input image\(s\) of .*out not found, e.g. '
                                             r'.*inputs/a.png: the manifest names them relative '
                                             r'to the folder; keep it beside its inputs'):
        contact_sheet(folder, thumb=16, legend=False)
    (tmp_path / 'inputs' / 'b.png').write_bytes(encode_jpeg(np.full((8, 8, 3), 255)))
    from mmdiffseg.apis import visualize
    logged = []
    monkeypatch.setattr(visualize, 'print_log', lambda message, **_: logged.append(message))
    assert contact_sheet(folder, thumb=16, legend=False).shape == (16, 16, 3)
    assert len(logged) == 1 and logged[0].startswith('contact sheet: 1 input image(s) of')
    assert logged[0].endswith('inputs/a.png: the manifest names them relative to the folder; '
                              'keep it beside its inputs; drawn without them')


def test_contact_sheet_shows_max_items_and_refuses_sizes_below_one(tmp_path):
    """As the tool's --max-items, --cols and --thumb: max_items=0 is refused, not 'all items'."""
    classes = ['background', 'cat']
    (tmp_path / IMAGE_DIR).mkdir()
    (tmp_path / MASK_DIR).mkdir()
    for name in ('a', 'b'):
        (tmp_path / IMAGE_DIR / f'{name}.jpg').write_bytes(encode_jpeg(np.zeros((8, 8, 3))))
        (tmp_path / MASK_DIR / f'{name}.png').write_bytes(
            encode_label_png(np.ones((8, 8), np.uint8), palette_for(classes)))
    (tmp_path / MANIFEST_NAME).write_text('{"classes": ["background", "cat"]}\n'
                                          '{"id": "a"}\n{"id": "b"}\n')
    assert contact_sheet(tmp_path, thumb=16, legend=False).shape == (16, 32, 3)
    sheet = contact_sheet(tmp_path, thumb=16)  # a legend strip below, padded to LEGEND_WIDTH
    assert sheet.shape == (16 + 22, LEGEND_WIDTH, 3) and (sheet[:16, 32:] == 0).all()
    colors = {tuple(c) for c in sheet[16:].reshape(-1, 3)}
    assert tuple(palette_for(classes)[1]) in colors  # the class shown: 'cat'
    strip = legend_strip([('cat', [10, 200, 30]), ('a' * 200, [200, 10, 30])], 100)
    assert strip.shape == (2 * 18 + 4, 100, 3)  # a name too long is cut to one row
    assert (strip[18 + 5, 5] == [200, 10, 30]).all()
    (tmp_path / IMAGE_DIR / 'a.jpg').write_bytes(encode_jpeg(np.full((8, 16, 3), 255)))
    (tmp_path / MASK_DIR / 'a.png').write_bytes(
        encode_label_png(np.ones((8, 16), np.uint8), palette_for(classes)))
    wide = contact_sheet(tmp_path, thumb=16, max_items=1, legend=False)  # 2:1: bars above, below
    assert (wide[:4] == 0).all() and (wide[12:, 12:] == 0).all() and (wide[5:11, 12:] > 60).all()
    assert contact_sheet(tmp_path, thumb=16, max_items=1, legend=False).shape == (16, 16, 3)
    for option in ('max_items', 'cols', 'thumb'):
        with pytest.raises(ValueError, match=rf'contact_sheet: {option}=0; pass {option} >= 1'):
            contact_sheet(tmp_path, **{option: 0})


def test_contact_sheet_names_a_folder_it_cannot_show_and_stops_at_a_line_being_written(tmp_path):
    with pytest.raises(UserInputError, match=r'has no manifest.jsonl: not a folder written by '
                                             r'synthesize / pseudo_label / segment'):
        contact_sheet(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text('')
    with pytest.raises(UserInputError, match=r'manifest.jsonl is empty: no finished items'):
        contact_sheet(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text('{"classes": null}\n{"id": "a"}\n')
    with pytest.raises(UserInputError, match='holds no finished items to show'):  # no files
        contact_sheet(tmp_path)
    (tmp_path / IMAGE_DIR).mkdir()
    (tmp_path / MASK_DIR).mkdir()
    for name in ('a', 'b'):  # segment ids at half the image's size
        (tmp_path / IMAGE_DIR / f'{name}.jpg').write_bytes(encode_jpeg(np.full((16, 16, 3), 255)))
        (tmp_path / MASK_DIR / f'{name}.png').write_bytes(
            encode_label_png(np.eye(8, dtype=np.uint8), palette_for(['0', '1'])))
    (tmp_path / MANIFEST_NAME).write_text('{"classes": null}\n{"id": "a"}\n{"id": "b", "fi')
    sheet = contact_sheet(tmp_path, thumb=16, legend=False)  # b's line is being appended
    assert sheet.shape == (16, 16, 3) and sheet.max() > 200


def test_long_ids_of_a_series_get_captions_that_tell_them_apart(tmp_path):
    """Captions kept an id's first 24 characters: a series (holiday_2024_beach_0000...0001)
    showed the same caption on every tile. The end is kept."""
    ones = np.ones((8, 8))
    names = ['summer_holiday_2024_beach_0000', 'summer_holiday_2024_beach_0001']
    sheet = contact_sheet(_folder(tmp_path, {n: ones for n in names}), thumb=160, legend=False)
    first, second = sheet[:16, :160], sheet[:16, 160:]
    assert (first != second).any()   # the captions differ
