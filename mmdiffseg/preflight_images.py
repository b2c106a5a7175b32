"""Pre-flight: the image files of a split are images OpenCV decodes, as training's
``LoadImageFromFile`` needs, judged by their headers and last bytes (a dataset has thousands:
only a file that does not end as its format ends is decoded)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Tuple

#: the last bytes of a complete JPEG (end of image) and PNG (the IEND chunk)
FILE_ENDS = {'JPEG': b'\xff\xd9', 'PNG': b'IEND\xaeB`\x82'}


def unreadable_images(paths: Iterable[str]) -> List[Tuple[str, str]]:
    """(path, why) of the files that are no image OpenCV reads, by their headers: not an image,
    32-bit samples, too many pixels; and a JPEG or PNG cut short (a copy or download that
    stopped), which training's ``LoadImageFromFile`` stops at: one without its format's last
    bytes is decoded to be sure (some carry data after them)."""
    from PIL import Image, UnidentifiedImageError
    from .apis.folders import TOO_LARGE, open_image, opencv_refusal
    from .attention.images import decode_rgb
    found = []
    for path in paths:
        try:
            with open_image(path) as img:
                refusal = opencv_refusal(img)
                end = FILE_ENDS.get(img.format)
            if not refusal and end and not _ends_with(path, end):
                try:
                    decode_rgb(Path(path).read_bytes(), path)
                except ValueError:
                    refusal = f'a {img.format} cut short, which OpenCV cannot decode'
            if refusal:
                found.append((path, refusal))
        except Image.DecompressionBombError:
            found.append((path, TOO_LARGE))
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            found.append((path, f'not an image ({type(err).__name__})'))
    return found


def _ends_with(path: str, end: bytes) -> bool:
    with open(path, 'rb') as f:
        f.seek(0, 2)
        f.seek(max(f.tell() - len(end), 0))
        return f.read() == end
