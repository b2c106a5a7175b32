"""Prompts -> synthetic image + mask pairs (SeeDiff's setting), resumable and deterministic.

Each item is one image of one class: id ``<class>_<index>``, prompt = template ``index % len``
filled with the class name, seed derived from the run seed and the id (:func:`.io.item_seed`), or
with ``seed_per_image='index'`` the run seed plus the index (SeeDiff's release: image ``k`` of a
class from seed ``200000 + k``). An item's initial noise does not depend on the batch, the shard
or where a run was resumed (its pixels do, within the rounding of batched U-Net calls over the
steps: byte-identical for the same batch size and ranks, docs/python_api.md "Batch size"). The
engine samples the image with classifier-free guidance and records the attention; the generator
(SeeDiff by default) turns it into the mask. Output: ``JPEGImages/<id>.jpg``,
``SegmentationClass/<id>.png`` (indices into the label set; 255 = unsure, only without a
background class), split file, manifest.
"""
from __future__ import annotations

import logging
import re
from functools import partial
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.logging import print_log

from ..attention.prompts import token_positions
from ..datasets.class_names import spelled_as
from ..generators.seediff import resolutions_for
from ..provenance import sampler_settings
from .builders import (build_generator, check_can_synthesise, check_model, class_list_arg,
                       complete_model_settings, job_header, load_engine, local_tokenizer)
from .folders import (IMAGE_DIR, MASK_DIR, encode_jpeg, encode_label_png, labelled_share,
                      palette_for, pixel_share, split_path)
from .io import ItemOutput, JobSummary, OverflowGuard, UserInputError, WorkItem, item_seed
from .jobs import run_job

DEFAULT_TEMPLATE = 'a photo of a {}'
#: SeeDiff's image size (its 16 / 32 / 64 token grids); other sizes scale the grids
RELEASED_SIZE = 512
#: how each image's seed follows from the run seed: a hash of it and the image id, or the run seed
#: plus the image's index in its class (``seediff_main_origin.py``: ``200000 + k`` in its first
#: process, ``torch.Generator().manual_seed`` of a CPU float32 draw, as the engine's)
SEED_PER_IMAGE = ('hash', 'index')
#: the seeds ``torch.Generator.manual_seed`` takes (a negative one wraps to 2**64 + seed)
SEED_RANGE = (-2 ** 63, 2 ** 64 - 1)


def seediff_resolutions(size: int) -> List[int]:
    """SeeDiff's token grids at ``size`` px (latent = size / 8 on SD 1.x / 2.x-base)."""
    if size < 64 or size % 64:
        raise UserInputError(f'--size {size}: SeeDiff reads a quarter, a half and all of the '
                             'latent grid (image size / 8), which the U-Net halves three times, '
                             'so the size must be a multiple of 64 and at least 64 (e.g. 512, '
                             '576, 640, 768)')
    return list(resolutions_for(size // 8))


def synth_items(names: Sequence[str], images_per_class: int, seed: int,
                seed_per_image: str = 'hash') -> List[WorkItem]:
    """Class-major item list; ids are ``<slug>_<index:05d>`` (two names with one slug are
    refused: their items would share ids); seeds by ``seed_per_image`` (:data:`SEED_PER_IMAGE`),
    'index' seeds all within :data:`SEED_RANGE`."""
    if images_per_class < 1:
        raise UserInputError(f'--images-per-class must be at least 1, got {images_per_class}')
    if seed_per_image not in SEED_PER_IMAGE:
        raise UserInputError(f'--seed-per-image {seed_per_image!r}: one of {SEED_PER_IMAGE}')
    low, high = SEED_RANGE
    if seed_per_image == 'index' and not low <= int(seed) <= high - (images_per_class - 1):
        raise UserInputError(
            f'--seed {seed}: with --seed-per-image index the images of a class are seeded '
            f'{seed} to {int(seed) + images_per_class - 1}, and torch takes seeds from {low} to '
            f'{high}; pass a --seed from {low} to {high - (images_per_class - 1)}')
    items, slugs = [], {}
    for name in names:
        slug = re.sub(r'[\W_]+', '-', name).strip('-').lower() or 'class'  # letters of any script
        if slug in slugs:
            raise UserInputError(f'--classes: {slugs[slug]!r} and {name!r} would both be written '
                                 f'as {slug}_*; give each class once, under distinct names')
        slugs[slug] = name
        for index in range(images_per_class):
            item_id = f'{slug}_{index:05d}'
            own = item_seed(seed, item_id) if seed_per_image == 'hash' else int(seed) + index
            items.append(WorkItem(item_id, dict(name=name, index=index, seed=own)))
    return items


def check_prompts(tokenizer, generator, names: Sequence[str]) -> None:
    """Refuse a prompt template in which a class's tokens do not occur as the engine looks them
    up (``'two {}s'``: ``cats`` is one token, not ``cat``), before any image is made: the
    template of each image index, for every class."""
    templates = generator.prompt_templates
    for name in names:
        for start, template in enumerate(templates):
            kwargs = generator.generate_kwargs([name], start=start)
            try:
                token_positions(tokenizer, kwargs['prompts'][0], kwargs['class_names'][0])
            except ValueError as exc:
                raise UserInputError(f'prompt template {template!r}: {exc}') from None


def synthesize(names: Sequence[str], out_dir, model: str, gen_cfg: Dict,
               label_set: Optional[Sequence[str]] = None, images_per_class: int = 1,
               prompts: Optional[Sequence[str]] = None, seed: int = 0, batch_size: int = 4,
               device: str = 'cpu', dtype: str = 'float32', size: int = 512,
               split: str = 'train', workers: Optional[int] = None,
               compile_backend: Optional[str] = None,
               variant: Optional[str] = None, seed_per_image: str = 'hash') -> JobSummary:
    """Synthesise ``images_per_class`` image/mask pairs per class name into ``out_dir``.

    Args:
        names: the classes to synthesise (a string: one class); ``'background'`` is none: it
            is the masks' class 0 of the default label set.
        gen_cfg: generator config (SeeDiff-like: ``generate_kwargs``).
        prompts: prompt templates (``{}`` = class name), cycled per image; ``None`` keeps the
            config's ``prompt_templates`` (else :data:`DEFAULT_TEMPLATE`).
        label_set: the mask indices (e.g. VOC's 21 classes); every name must be in it. Default:
            ``gen_cfg``'s ``classes`` where they hold every name (a preset's, e.g. VOC's 21),
            else ``['background', *names]``.
        size: image side in pixels; SeeDiff's token grids scale with it
            (:func:`seediff_resolutions`) unless ``gen_cfg`` sets ``resolutions``.
        workers: writer processes encoding the JPEGs and PNGs (:func:`.jobs.run_job`).
        compile_backend, variant: the U-Net's ``torch.compile`` backend and the weights variant
            to load (:func:`.load_engine`).
        seed_per_image: ``'hash'`` (each image's seed a hash of ``seed`` and its id) or
            ``'index'`` (``seed`` + its index in its class; ``seed=200000``: SeeDiff's release).

    Raises:
        UserInputError: before any work, for an unknown class name, a bad template or a
            missing model.
    """
    names = [names] if isinstance(names, str) else list(names)
    label_set = class_list_arg(label_set, 'label_set')
    if not names:
        raise UserInputError('no classes to synthesise')
    if any(name.strip().lower() == 'background' for name in names):
        raise UserInputError(
            f'--classes {names} holds "background": it is not a class to synthesise (its '
            'prompt makes no object), but class 0 of the masks, where no class is; leave it out '
            '(the default label set adds it; --label-set voc keeps it as class 0)')
    preset = list(gen_cfg.get('classes') or ()) if isinstance(gen_cfg, dict) else []
    outside_preset = [n for n in spelled_as(names, preset) if n not in preset]
    if label_set is None and preset and not outside_preset:
        label_set, names = preset, spelled_as(names, preset)
    elif label_set is None:
        label_set = ['background'] + names
        if preset:
            print_log(f'{outside_preset} are not classes of the generator config, so the masks '
                      f'index background + the classes ({label_set}), not its classes; '
                      '--label-set sets the indices', logger='current', level=logging.WARNING)
    else:
        label_set = list(label_set)
        names = spelled_as(names, label_set)
        outside = sorted({n for n in names if n not in label_set})
        if outside:
            raise UserInputError(
                f'--classes {outside} not in --label-set (the mask indices: {label_set}); '
                'leave --label-set out for masks of background + the --classes (or of the '
                "--config preset's classes, where they hold them all), or give a --label-set "
                'that holds them')
    check_can_synthesise(gen_cfg, 'gen_cfg')  # before the templates it would not take
    if prompts is not None:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        bad = [p for p in prompts if '{}' not in p]
        if bad or not prompts:
            raise UserInputError(f'prompt template(s) {bad} have no "{{}}" for the class name')
        gen_cfg = dict(gen_cfg, prompt_templates=list(prompts))
    gen_cfg = dict(gen_cfg)
    gen_cfg.setdefault('prompt_templates', [DEFAULT_TEMPLATE])
    if gen_cfg.get('type') == 'SeeDiff' and size != RELEASED_SIZE:
        gen_cfg.setdefault('resolutions', seediff_resolutions(size))
    model = check_model(model, variant)
    generator = build_generator(gen_cfg, label_set)
    items = synth_items(names, images_per_class, seed, seed_per_image)
    tokenizer = local_tokenizer(model)
    if tokenizer is not None:  # else right after the model load
        check_prompts(tokenizer, generator, names)
    palette = palette_for(label_set)
    header = job_header('synthesize', model, dtype, generator, label_set, variant=variant,
                        size=size, seed=int(seed), sampler=sampler_settings(model),
                        **({} if seed_per_image == 'hash' else {'seed_per_image': seed_per_image}))

    def prepare():
        """The model (loaded while the writer processes start) and the GPU work; images and
        masks are encoded in the writer processes."""
        engine = load_engine(model, device, dtype, generator.capture_spec, size,
                             generator=generator, compile_backend=compile_backend, variant=variant,
                             size_option=True)
        complete_model_settings(header, model)
        if tokenizer is None:
            check_prompts(engine.tokenizer, generator, names)
        generator.to(engine.device)
        guard = OverflowGuard()

        def compute(batch: List[WorkItem], _loaded) -> List:
            return guard(lambda index: make([batch[i] for i in index]), len(batch))

        def make(batch: List[WorkItem]) -> List[ItemOutput]:
            per_item = [generator.generate_kwargs([it.payload['name']],
                                                  start=it.payload['index']) for it in batch]
            first = per_item[0]
            item_prompts = [k['prompts'][0] for k in per_item]
            class_names = [k['class_names'][0] for k in per_item]
            images, maps = engine.generate(
                item_prompts, class_names=class_names, steps=first['steps'],
                guidance_scale=first['guidance_scale'],
                seed=[it.payload['seed'] for it in batch], capture=generator.capture_spec,
                height=size, width=size)
            with torch.no_grad():
                labels = generator(maps, images.to(engine.device), class_names).cpu().numpy()
            rgb = images.permute(0, 2, 3, 1).numpy()
            return [ItemOutput({f'{IMAGE_DIR}/{it.id}.jpg': partial(encode_jpeg, img),
                                f'{MASK_DIR}/{it.id}.png': partial(
                                    encode_label_png, lab.astype(np.uint8), palette)},
                               dict(prompt=p, seed=it.payload['seed'],
                                    class_name=it.payload['name'],
                                    labelled=labelled_share(lab),
                                    class_share=pixel_share(
                                        lab, label_set.index(it.payload['name']))))
                    for it, img, lab, p in zip(batch, rgb, labels, item_prompts)]
        return compute

    return run_job(items, None, None, out_dir, header, batch_size=batch_size,
                   split_file=split_path(split), workers=workers, prepare=prepare)
