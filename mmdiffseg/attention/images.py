"""Image inputs of the engine and the generators: every accepted form -> float ``(3, H, W)`` RGB
in [0, 255], and the U-Net's ``(B, 3, S, S)`` input in [-1, 1].

Accepted: a ``(B, C, H, W)`` or ``(C, H, W)`` tensor; a PIL image, an ``HxWxC`` or ``HxW`` array
or a ``(B, H, W, C)`` array; a list of those (any sizes). ``C`` is 1 (grey), 3 (RGB) or 4 (RGBA,
alpha dropped); values are uint8 or float in 0..255. Images on the host are resized as the offline
tools' loaders resize them (:func:`resize_rgb`), so every route gives the same U-Net input.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import mmcv
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

ImagesLike = Union[torch.Tensor, np.ndarray, Image.Image,
                   Sequence[Union[np.ndarray, torch.Tensor, Image.Image]]]
CHANNELS = (1, 3, 4)

#: the side of the square the engine and the tools resize images to (the releases' 512)
WORK_SIZE = 512


def decode_rgb(image_bytes: bytes, path) -> np.ndarray:
    """The bytes of the image file ``path`` decoded as mmseg's ``LoadImageFromFile`` decodes them
    for training (its defaults: mmcv, OpenCV, ``'color'``: EXIF orientation applied, grey and
    palette as RGB, alpha dropped, 16-bit samples to their high byte), as RGB uint8 ``HxWx3``:
    the one decoder of the labels' images, so a label lines up with the image trained on. A file
    OpenCV cannot decode is named (``ValueError``)."""
    try:
        image = mmcv.imfrombytes(image_bytes, flag='color', channel_order='bgr', backend='cv2')
    except cv2.error:  # an empty file
        image = None
    if image is None:
        raise ValueError(f'cannot read image {path}: OpenCV cannot decode it (not an image, or '
                         'damaged): replace it, or leave it out (remove the file, or its line in '
                         'the split file that lists it)')
    return mmcv.bgr2rgb(image)


#: the EXIF tag of a photo's rotation (phones store the pixels unrotated)
EXIF_ORIENTATION = 0x0112


def pil_rgb(image: Image.Image) -> np.ndarray:
    """``HxWx3`` uint8 RGB of a PIL image as OpenCV (so mmseg's ``LoadImageFromFile``) reads its
    file: the EXIF orientation of an image as opened applied (``Image.open`` leaves a phone
    photo's pixels unrotated: the label would be rotated against the image trained on; an image
    the user rotated or cropped keeps the tag, and its pixels are taken as they are), 16-bit
    grey (``'I;16'``, ``'I'``) scaled to its high byte, where ``convert('RGB')`` would clip it to
    255; grey, palette and RGBA as RGB. ``'F'`` floats, and a ``'I'`` image made in memory whose
    values fit 8 bits (``Image.fromarray`` of int32 0..255), are judged as the arrays they
    hold."""
    if image.mode == 'F' or (image.mode == 'I' and image.format is None and
                             np.asarray(image).max(initial=0) <= 255):
        return np.asarray(image)
    if image.format is not None and image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith('I'):
        grey = np.asarray(image).astype(np.int64).clip(0, 65535) >> 8
        return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(image.convert('RGB')).copy()


def resize_rgb(rgb: np.ndarray, size: int = WORK_SIZE) -> np.ndarray:
    """``HxWx3`` at ``size x size`` (aspect not kept): OpenCV's bilinear on the uint8 image, as
    the released iSeg's ``cv2.resize`` and the offline tools' loaders."""
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)


def _layout_hint(shape: Tuple[int, ...], channels_last: bool) -> str:
    """How to fix an image whose channels sit on the other side."""
    if channels_last and shape[0] in CHANNELS:
        return ' (arrays are HxWxC: for a CxHxW array pass image.transpose(1, 2, 0))'
    if not channels_last and shape[-1] in CHANNELS:
        return (' (tensors are CxHxW: for an HxWxC tensor pass image.permute(2, 0, 1), for a '
                'BxHxWxC batch images.permute(0, 3, 1, 2))')
    return ''


def _to_rgb(image: torch.Tensor, where: str, channels_last: bool = False) -> torch.Tensor:
    """``(C, H, W)`` with C in {1, 3, 4} -> float ``(3, H, W)``; alpha is dropped."""
    if image.ndim != 3:
        raise ValueError(f'{where}: expected an image (C,H,W) or (H,W,C), got shape {tuple(image.shape)}')
    channels = image.shape[0]
    if channels not in CHANNELS:
        shape = tuple(image.permute(1, 2, 0).shape) if channels_last else tuple(image.shape)
        raise ValueError(f'{where}: {channels} channels in shape {shape}; only grayscale (1), '
                         f'RGB (3) and RGBA (4, alpha dropped) images are supported'
                         + _layout_hint(shape, channels_last))
    if 0 in image.shape[1:]:
        raise ValueError(f'{where}: an empty image (shape {tuple(image.shape)}, channels first)')
    if image.dtype == torch.bool:
        fix = 'image.astype(np.uint8) * 255' if channels_last else 'image.to(torch.uint8) * 255'
        raise ValueError(f'{where}: dtype bool (a mask?); expected an RGB image, uint8 or float '
                         f'in [0, 255]: a binary image as black and white is {fix}')
    if not image.is_floating_point() and image.dtype != torch.uint8:
        high, byte = (('(image >> 8).astype(np.uint8)', 'image.astype(np.uint8)') if channels_last
                      else ('(image.int() >> 8).to(torch.uint8)', 'image.to(torch.uint8)'))
        raise ValueError(f'{where}: dtype {image.dtype}; expected uint8 or float in [0, 255]: '
                         f'pass a 16-bit image as its high byte, {high} (as 16-bit files are '
                         f'read), an integer image in 0..255 as {byte}')
    if channels == 1:
        image = image.expand(3, -1, -1)
    return image[:3].float()


def _array_to_rgb(image, where: str) -> torch.Tensor:
    """A PIL image or an ``HxWxC`` / ``HxW`` array -> float ``(3, H, W)``."""
    if isinstance(image, Image.Image):
        image = pil_rgb(image)
    image = np.ascontiguousarray(image)
    if not image.flags.writeable:  # np.asarray(a PIL image): torch.from_numpy would warn
        image = image.copy()
    arr = torch.from_numpy(image)
    if arr.ndim == 2:  # grayscale
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f'{where}: expected an HxWx3 array, got shape {image.shape}')
    return _to_rgb(arr.permute(2, 0, 1), where, channels_last=True)


def _as_list(images: ImagesLike) -> list:
    """The images as a list (a batch tensor is split in :func:`image_list`)."""
    single_array = isinstance(images, np.ndarray) and images.ndim in (2, 3)
    if single_array or isinstance(images, Image.Image):
        return [images]
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.shape[1] in CHANNELS and images.shape[-1] not in CHANNELS:
            raise ValueError(f'images: a {images.shape} array looks like a BxCxHxW batch; arrays '
                             'are HxWxC: pass images.transpose(0, 2, 3, 1)')
        return list(images)
    if not isinstance(images, (list, tuple)) or not len(images):
        raise ValueError(f'images: expected a (B,3,H,W) tensor, a PIL image, an HxWx3 uint8 array '
                         f'or a non-empty list of them, got {type(images).__name__}'
                         + (' (empty)' if isinstance(images, (list, tuple)) else ''))
    return list(images)


def _refuse_an_empty_batch(images: ImagesLike) -> None:
    """A batch tensor or array of no image, named as an empty list is (the U-Net and the
    resizing failed on it with errors about reshapes and stacks)."""
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4 and not len(images):
        raise ValueError(f'images: an empty batch (shape {tuple(images.shape)}); give at least '
                         'one image')


def image_list(images: ImagesLike) -> List[torch.Tensor]:
    """Split the accepted image inputs into a list of float ``(3, H, W)`` RGB tensors."""
    _refuse_an_empty_batch(images)
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(f'images: a tensor must be (B,C,H,W) or (C,H,W) RGB in [0,255], got shape '
                             f'{tuple(images.shape)} (a 2-D tensor is ambiguous: add the channel '
                             'and batch dimensions)')
        return [_to_rgb(img, f'images[{i}]') for i, img in enumerate(images)]
    out = []
    for i, img in enumerate(_as_list(images)):
        if isinstance(img, torch.Tensor):
            out.append(_to_rgb(img, f'images[{i}]'))
        elif isinstance(img, (np.ndarray, Image.Image)):
            out.append(_array_to_rgb(img, f'images[{i}]'))
        else:
            raise ValueError(f'images[{i}]: expected a numpy array, PIL image or tensor, got '
                             f'{type(img).__name__}')
    return out


def given_as_float(images: ImagesLike, count: int) -> List[bool]:
    """Per image of :func:`image_list`'s ``count``, whether it was given as floats (uint8 and
    PIL images are 0..255 by construction)."""
    if isinstance(images, torch.Tensor):
        return [images.is_floating_point()] * count
    return [img.is_floating_point() if isinstance(img, torch.Tensor)
            else isinstance(img, Image.Image) and img.mode == 'F'
            or isinstance(img, np.ndarray) and np.issubdtype(img.dtype, np.floating)
            for img in _as_list(images)]


#: the highest float value read as 0..255 (clamped): a bicubic resize overshoots 255 by ~10%; a
#: 16-bit image given as floats reaches thousands
HIGHEST_8_BIT_FLOAT = 300.0
#: a mean/std-normalised image (ImageNet's mean and std: about [-2.1, 2.6]) lies within these
NORMALISED_RANGE = (-3.0, 3.0)


def _whole(image: torch.Tensor) -> bool:
    """Whether every value is a whole number: a 0..255 image cast to float (a dark one lies in
    the range of a bright photo normalised by mean/std, which is not whole)."""
    return bool(torch.equal(image, image.round()))


def check_value_range(pixels: torch.Tensor, checked: Sequence[int],
                      numbers: Optional[Sequence[int]] = None, finite_only: bool = False) -> None:
    """Refuse float images the engine would misread as RGB in 0..255 (clamped to it): in
    [0, 1] or [-1, 1] (diffusers' conventions: black), mean/std-normalised (a data preprocessor's
    output, within [-3, 3] with values below 0, or above 1 and not whole numbers, which tells a
    bright photo's from a dark 0..255 image cast to float: black) or far above 255 (a 16-bit
    image as floats: white). Each image of ``(B, 3, H, W)`` ``pixels`` whose index is in
    ``checked`` is judged on its own values (one host sync); ``numbers``: the images' numbers in
    the caller's list (default their indices); ``finite_only``: NaN and inf only."""
    lows, highs = torch.stack(torch.aminmax(pixels.flatten(1), dim=1)).tolist()
    for at in checked:
        low, high, i = lows[at], highs[at], at if numbers is None else numbers[at]
        values = f'images[{i}]: float values in [{low:.3g}, {high:.3g}]'
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f'images[{i}] holds NaN or inf values: the engine reads RGB in '
                             '0..255; replace them (e.g. torch.nan_to_num) or pass uint8 images')
        if finite_only:
            continue
        if high <= 1 and (high > 0 or low < 0):
            scale = '[-1, 1]' if low < 0 else '[0, 1]'
            fix = '(images + 1) * 127.5' if low < 0 else 'images * 255'
            raise ValueError(f'{values} look like a {scale} image; the engine and generators '
                             f'read RGB in 0..255: pass {fix} (or uint8 images)')
        if NORMALISED_RANGE[0] <= low and high <= NORMALISED_RANGE[1] and (
                low < -1 or high > 1 and (low < 0 or not _whole(pixels[at]))):
            raise ValueError(f'{values} look like a mean/std-normalised image (a data '
                             "preprocessor's output; as RGB in 0..255 it is black); the engine "
                             'and generators read RGB in 0..255: pass the image before '
                             'normalisation (or images * std + mean; a [0, 1] image resized '
                             'with overshoot: images * 255)')
        if high > HIGHEST_8_BIT_FLOAT:
            raise ValueError(f'{values} go above 255, as a 16-bit image given as floats does; '
                             'the engine and generators read RGB in 0..255: pass images / 257 '
                             '(or the uint8 image)')


def work_images(images: ImagesLike, image_size: int = WORK_SIZE
                ) -> Tuple[List[torch.Tensor], List[Tuple[int, int]]]:
    """Each image as ``(3, S, S)`` RGB on its device, and its original ``(H, W)``: a uint8 image
    on the host through :func:`resize_rgb` (uint8), any other (float, or on a GPU) by torch's
    bilinear (``align_corners=False``, float); one already ``S x S`` as it is."""
    rgb = image_list(images)
    given_float = given_as_float(images, len(rgb))
    out = []
    for i, img in enumerate(rgb):
        if tuple(img.shape[-2:]) == (image_size, image_size):
            out.append(img if given_float[i] else img.to(torch.uint8))
        elif img.device.type == 'cpu' and not given_float[i]:
            hwc = img.to(torch.uint8).permute(1, 2, 0).numpy()
            out.append(torch.from_numpy(resize_rgb(hwc, image_size)).permute(2, 0, 1))
        else:
            out.append(F.interpolate(img[None], size=(image_size, image_size), mode='bilinear',
                                     align_corners=False)[0])
    return out, [tuple(img.shape[-2:]) for img in rgb]


def preprocess_images(images: ImagesLike, image_size: int) -> torch.Tensor:
    """Images -> ``(B, 3, S, S)`` float32 in [-1, 1]: :func:`work_images` (aspect not kept, as
    iSeg's ``cv2.resize``; DiffSeg's release crops the centre square first, as the evaluation
    configs do with ``CenterSquareCrop``), then ``x / 127.5 - 1``. Every image given as floats
    goes through :func:`check_value_range`."""
    _refuse_an_empty_batch(images)
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3 and \
            tuple(images.shape[-2:]) == (image_size, image_size) and \
            (images.dtype == torch.uint8 or images.is_floating_point()):
        resized = images.float()  # a batch at the size (the tools'): one conversion
    else:
        resized = torch.stack([img.float() for img in work_images(images, image_size)[0]])
    floats = [i for i, is_float in enumerate(given_as_float(images, len(resized))) if is_float]
    if floats:
        check_value_range(resized, floats)
    return resized.clamp(0, 255) / 127.5 - 1.0
