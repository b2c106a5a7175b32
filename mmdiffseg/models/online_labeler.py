"""Labels made inside the training loop, batched on the model's device, cached on disk.

:class:`OnlineLabeler` holds the Stable Diffusion engine (loaded lazily, in the main process, on
the model's device: dataloader workers never see it), the generator and the :class:`LabelCache`.
For the samples whose label is not cached yet (``LoadPseudoLabel`` packed a source-index map
instead), it reads the *original* images, generates their labels in batches, writes them to the
cache, and gathers each augmented sample's target through its index map. The result is exactly
the label the next epoch will load from the cache and augment like ground truth; each image is
labelled once across epochs, runs and training ranks (claims in :class:`LabelCache`).
``tools/prefill_labels.py`` fills the same cache before training through the same
:meth:`OnlineLabeler.labels`.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine import fileio
from mmengine.logging import MessageHub, print_log
from mmengine.structures import PixelData

from ..attention.loading import DTYPES
from ..attention.images import WORK_SIZE, decode_rgb, work_images
from ..attention.prompts import token_positions
from ..datasets.cache_settings import canonical_cache_spec, revision_refusal
from ..datasets.label_cache import LabelCache
from ..registry import MASK_GENERATORS
from ..generators.base import IGNORE_INDEX, MaskGenerator


def prompt_refusals(tokenizer, generator: MaskGenerator,
                    class_names: Sequence[Sequence[str]]) -> List[Optional[str]]:
    """Per image, why the generator cannot read its class names off its prompt (a class past
    the text encoder's 77 tokens: some 30 ADE20K names in one iSeg prompt), or None: one image's
    long list must not stop its batch (:func:`label_images` raises for the whole batch). One
    tokenizer pass per prompt; the classes are looked for only in a prompt longer than that."""
    refusals: List[Optional[str]] = []
    for names in class_names:
        try:
            kwargs = generator.extract_kwargs([names])
            prompt, placed = (kwargs.get('prompts') or [''])[0], kwargs.get('class_names')
            if placed is not None and prompt and len(tokenizer(
                    prompt.lower(), verbose=False).input_ids) > tokenizer.model_max_length:
                token_positions(tokenizer, prompt, placed[0])
        except ValueError as exc:
            refusals.append(str(exc))
        else:
            refusals.append(None)
    return refusals


def long_prompts(tokenizer, generator: MaskGenerator,
                 class_names: Mapping[str, Sequence[str]]) -> List[Tuple[str, int]]:
    """``(image id, token count)`` of the images whose prompt is longer than the text encoder
    reads (``model_max_length``, 77): the tokens past it are cut, as the released code's
    ``truncation=True`` cuts them (:func:`prompt_refusals`: those that lose a class)."""
    limit, found = tokenizer.model_max_length, []
    for image_id, names in class_names.items():
        prompt = (generator.extract_kwargs([list(names)]).get('prompts') or [''])[0]
        count = len(tokenizer(prompt.lower(), verbose=False).input_ids)
        if count > limit:
            found.append((image_id, count))
    return found


@torch.no_grad()
def label_images(engine, generator: MaskGenerator,
                 images: Union[Sequence[np.ndarray], torch.Tensor],
                 class_names: Optional[List[List[str]]],
                 out_sizes: Optional[Sequence[Tuple[int, int]]] = None) -> List[np.ndarray]:
    """One engine pass and the generator on RGB uint8 ``HxWx3`` images of any sizes (or any image
    the engine takes: grey, RGBA, PIL; :func:`~mmdiffseg.attention.images.image_list`), or on a
    ``(B, 3, S, S)`` uint8 tensor (the offline tools' loaded batch, already at the working size
    and pinned on CUDA: copied without blocking, converted on the device).

    Images are resized to the working size as the tools' loaders resize them
    (:func:`~mmdiffseg.attention.images.work_images`: OpenCV on the host for uint8), so an image
    gets the same label from the tools, the label cache and this function. The generator sees
    them so and makes each label at ``out_sizes[b]`` (default: its image's size) on the device
    (:meth:`~mmdiffseg.generators.base.MaskGenerator.labels_at`); the batch comes back as uint8
    in one copy.

    Raises:
        ValueError: a label above 255 (more DiffSeg segments than a uint8 map holds).
    """
    names = class_names if class_names is not None else [[] for _ in images]
    if isinstance(images, torch.Tensor) and tuple(images.shape[-2:]) == (WORK_SIZE, WORK_SIZE):
        in_sizes = [tuple(images.shape[-2:])] * len(images)
    else:
        resized, in_sizes = work_images(images, WORK_SIZE)
        images = torch.stack(resized if all(r.dtype == torch.uint8 for r in resized)
                             else [r.float() for r in resized])
    images = images.to(engine.device, non_blocking=True)
    maps = engine.extract(images, capture=generator.capture_spec,
                          **generator.extract_kwargs(names))
    size = tuple(maps.image_size)
    work = images.float()
    if tuple(work.shape[-2:]) != size:
        work = F.interpolate(work, size=size, mode='bilinear', align_corners=False)
    sizes = out_sizes if out_sizes is not None else in_sizes
    labels = generator.labels_at(maps.to(engine.device), work, class_names, sizes)
    return _labels_to_host(labels, sizes, type(generator).__name__)


def _labels_to_host(labels: Sequence[torch.Tensor], sizes: Sequence[Tuple[int, int]],
                    generator_name: str) -> List[np.ndarray]:
    """The batch's labels (each at its size) and an above-255 flag in one copy to the host (one
    synchronisation per batch)."""
    flat = torch.cat([label.flatten() for label in labels])
    too_big = (flat > IGNORE_INDEX).any().reshape(1)
    host = torch.cat([too_big.to(torch.uint8), flat.to(torch.uint8)]).cpu().numpy()
    if host[0]:
        raise ValueError(f'{generator_name} made label {int(flat.max())}; uint8 label '
                         'maps hold 0..254 (255 = unsure): for DiffSeg segments raise '
                         'kl_thresholds')
    ends = np.cumsum([h * w for h, w in sizes])[:-1]
    return [part.reshape(tuple(hw)) for part, hw in zip(np.split(host[1:], ends), sizes)]


def engine_dtype(name: str, owner: str) -> torch.dtype:
    """The torch dtype of ``'float32'``, ``'float16'`` or ``'bfloat16'``."""
    if name not in DTYPES:
        raise ValueError(f'{owner}: dtype must be one of {sorted(DTYPES)}, got {name!r}')
    return DTYPES[name]


class AttentionLabeler:
    """Engine + generator: images -> labels on one device, batched (a plain object, so neither
    the Stable Diffusion weights nor the generator enter the model's state dict).

    Args:
        model: Stable Diffusion hub id or diffusers folder (loaded on first use).
        generator: the generator or its config (``MASK_GENERATORS``).
        dtype: engine precision (``'float32'``, ``'float16'``, ``'bfloat16'``).
        batch_size: images per engine call.
        engine_kwargs: extra ``DiffusionAttentionEngine.from_pretrained`` arguments.
        overflow_fix: the option that runs the engine in float32, named where the maps of
            every image overflow (:class:`~mmdiffseg.apis.io.OverflowGuard`).
    """

    def __init__(self, model: str, generator, dtype: str = 'float32', batch_size: int = 4,
                 engine_kwargs: Optional[Dict] = None,
                 overflow_fix: str = '--cfg-options model.engine_dtype=float32'):
        from ..apis.io import OverflowGuard  # (mmdiffseg.apis imports this module)
        self.model = str(model)
        self.generator = generator if isinstance(generator, MaskGenerator) else \
            MASK_GENERATORS.build(generator)
        self.dtype = engine_dtype(dtype, type(self).__name__)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f'{type(self).__name__}: batch_size (images per engine call: '
                             "DiffusionSegmentor's batch_size, the preprocessor's "
                             f'label_batch_size) must be a whole number, at least 1, got '
                             f'{batch_size!r}')
        self.batch_size = batch_size
        self.engine_kwargs = dict(engine_kwargs or {})
        self.engine = None
        self.overflow = OverflowGuard(overflow_fix)

    def load_engine(self, device: torch.device):
        """The engine on ``device`` (loaded on first use)."""
        if self.engine is None:
            from ..apis.builders import warn_model_notes
            from ..attention import DiffusionAttentionEngine
            self.generator.check_device(torch.device(device))  # before the model loads
            self.engine = DiffusionAttentionEngine.from_pretrained(
                self.model, dtype=self.dtype, device=device, **self.engine_kwargs)
            warn_model_notes(self.engine, self.generator, 512)  # what of it fits another model
        self.generator.to(self.engine.device)
        return self.engine

    @torch.no_grad()
    def generate(self, images: List[np.ndarray], class_names: Optional[List[List[str]]],
                 device: torch.device,
                 out_sizes: Optional[Sequence[Tuple[int, int]]] = None) -> List:
        """Labels (uint8, each at ``out_sizes[i]``, default its image's size) of RGB ``HxWx3``
        images (uint8, or float 0..255); an :class:`~mmdiffseg.apis.io.ItemFailed` for an image
        whose maps overflow alone (NaN / inf) or whose class names its prompt cannot hold
        (:func:`prompt_refusals`; :func:`unsure_label` stands for either).

        Runs outside any autocast region (``--amp`` wraps the preprocessor in one): the engine
        keeps its own dtype and the generator gets float32 maps."""
        from ..apis.io import ItemFailed
        engine = self.load_engine(device)
        refused = [None] * len(images) if class_names is None else \
            prompt_refusals(engine.tokenizer, self.generator, class_names)

        def pick(values, index):
            return None if values is None else [values[i] for i in index]
        with torch.autocast(device_type=torch.device(device).type, enabled=False):
            labels: List = [ItemFailed(why) if why else None for why in refused]
            kept = [i for i, why in enumerate(refused) if why is None]
            for start in range(0, len(kept), self.batch_size):
                part = kept[start:start + self.batch_size]

                def run(index: List[int], part=part) -> List[np.ndarray]:
                    chosen = pick(part, index)
                    return label_images(engine, self.generator, pick(images, chosen),
                                        pick(class_names, chosen), pick(out_sizes, chosen))
                for i, made in zip(part, self.overflow(run, len(part))):
                    labels[i] = made
            return labels


def unsure_label(failed: Exception, size: Sequence[int], image: str, note: str = '') -> np.ndarray:
    """The all-unsure label (255: no pixel's loss, though Mask2Former's classifier still sees an
    image without objects) standing for ``image``, which failed (``failed``: its maps
    overflowed, or its prompt cannot hold its classes), logged with its name: mmengine drops a
    warning repeated word for word."""
    print_log(f'{image}: {failed}: it gets an all-unsure label (255){note}', logger='current',
              level=logging.WARNING)
    return np.full(tuple(size[:2]), IGNORE_INDEX, np.uint8)


class OnlineLabeler:
    """Labels of the training images a :class:`LabelCache` lacks, each made exactly once across
    processes (:meth:`LabelCache.fetch_or_make`), batched on the model's device.

    Bound on first use to the label-cache settings the samples carry (``LoadPseudoLabel``'s
    ``cache``: folder, Stable Diffusion model, generator), so a config names them once.

    Args:
        dtype, batch_size, engine_kwargs, overflow_fix: :class:`AttentionLabeler` arguments.
    """

    def __init__(self, dtype: str = 'float32', batch_size: int = 4,
                 engine_kwargs: Optional[Dict] = None,
                 overflow_fix: str = ('--cfg-options '
                                      'model.data_preprocessor.engine_dtype=float32')):
        engine_dtype(dtype, type(self).__name__)
        self.options = dict(dtype=dtype, batch_size=batch_size, engine_kwargs=engine_kwargs,
                            overflow_fix=overflow_fix)
        self.spec: Optional[dict] = None
        self.cache: Optional[LabelCache] = None
        self.labeler: Optional[AttentionLabeler] = None
        self.generated = 0
        self.waited = 0
        self.read = 0   # labels the pipeline read from the cache (the batches' samples)
        self.announced = False

    def bind(self, spec: Dict, check_writer: bool = True) -> LabelCache:
        """The label cache of ``spec`` (``LabelCache`` arguments), built and checked on first
        use; one labeler serves one cache. ``check_writer=False``: this process's precision and
        weights variant are checked against a signed folder's before the first label it makes,
        not now (a prefill of a full cache reads it in any precision)."""
        spec = canonical_cache_spec(spec)
        if self.spec is None:
            refusal = revision_refusal(self.options['engine_kwargs'], spec['cache_dir'])
            if refusal:
                from ..apis.io import UserInputError  # (mmdiffseg.apis imports this module)
                raise UserInputError(': '.join(refusal))
            cache = LabelCache(**spec, writer_dtype=self.options['dtype'], writer_variant=(
                self.options['engine_kwargs'] or {}).get('variant'))
            # a new folder whose model is here is signed now, so the first job started sets the
            # precision (else at the load)
            if not cache.check_signature(writer=check_writer) and \
                    cache.signature['model'].get('config_hash'):
                cache.sign()
            self.labeler = AttentionLabeler(cache.model, cache.generator, **self.options)
            self.spec, self.cache = spec, cache
        elif spec != self.spec:
            raise ValueError(f'one DiffusionLabelPreprocessor serves one label cache, but the '
                             f'samples name two: {self.spec} and {spec}')
        return self.cache

    def labels(self, items: Dict[str, Tuple[Callable[[], np.ndarray], List[str]]],
               device: torch.device) -> Dict[str, np.ndarray]:
        """key -> label of each item ``(reader of its RGB uint8 image, its class names)``:
        loaded from the cache, made here (batched) or waited for while another process makes it;
        an :class:`~mmdiffseg.apis.io.ItemFailed` where the image failed (not cached).
        """
        def make(keys: List[str]) -> List[np.ndarray]:
            return self.labeler.generate([items[k][0]() for k in keys],
                                         [list(items[k][1]) for k in keys], device)

        def prepare() -> None:  # before any claim: other processes do not wait on the load
            self.labeler.load_engine(device)
            self.cache.sign()   # this run's precision, before it claims a label

        labels, made, waited = self.cache.fetch_or_make(list(items), make, prepare)
        self.generated += len(made)
        self.waited += len(waited)
        return labels

    # -- training batches ------------------------------------------------------------------
    def _labels_of_samples(self, samples: Sequence,
                           device: torch.device) -> Dict[str, np.ndarray]:
        """key -> label of the original image of every uncached sample."""
        items = {}
        for sample in samples:
            self.bind(sample.metainfo['pseudo_label_cache'])
            path = sample.metainfo['img_path']
            items.setdefault(sample.metainfo['pseudo_label_key'],
                             (lambda path=path: decode_rgb(fileio.get(path), path),
                              sample.metainfo['image_labels']))
        return self.labels(items, device)

    def label_batch(self, data_samples: Sequence, device: torch.device) -> None:
        """Fill ``gt_sem_seg`` of the samples packed with a source-index map, and log the batch's
        label coverage, generation time and number of labels generated / waited for (this
        process)."""
        for sample in data_samples:
            # a sample with its own (1, H, W) label passes (a ConcatDataset's masks); not a
            # source-index map that PackSegInputs packed as a label, (H, W, 4)
            if 'pseudo_label_index' not in sample and 'gt_sem_seg' in sample and \
                    sample.gt_sem_seg.data.shape[0] == 1:
                continue
            if not all(k in sample.metainfo for k in ('image_labels', 'pseudo_label_key',
                                                       'pseudo_label_cache')):
                raise KeyError('DiffusionLabelPreprocessor needs LoadImageLevelLabels, '
                               'LoadPseudoLabel and PackPseudoLabelInputs in the train pipeline '
                               f'(sample {sample.metainfo.get("img_path")} lacks their keys)')
        uncached = [s for s in data_samples if 'pseudo_label_index' in s]
        start = time.perf_counter()
        generated_before, waited_before = self.generated, self.waited
        try:
            labels = self._labels_of_samples(uncached, device) if uncached else {}
        except torch.cuda.OutOfMemoryError as exc:
            raise torch.cuda.OutOfMemoryError(self._memory_advice(exc)) from exc
        for sample in uncached:
            index = sample.pseudo_label_index.data
            label = labels[sample.metainfo['pseudo_label_key']]
            if not isinstance(label, np.ndarray):  # the image failed: every target pixel 255
                label = unsure_label(label, sample.metainfo.get('ori_shape', (1, 1)),
                                     sample.metainfo['img_path'],
                                     ' in this batch (not cached)')
                index = torch.full_like(index, -1)
            loaded = tuple(sample.metainfo.get('ori_shape', label.shape))[:2]
            if label.shape != loaded:
                raise ValueError(
                    f'{sample.metainfo["img_path"]} was loaded as {loaded[::-1]} (WxH) but the '
                    f'labeler decodes it as {label.shape[::-1]}: online labels read images as '
                    "LoadImageFromFile's defaults do (OpenCV, color_type='color', EXIF "
                    'orientation applied); give the train pipeline\'s LoadImageFromFile those')
            source = torch.from_numpy(label).flatten()
            target = torch.full(index.shape, IGNORE_INDEX, dtype=torch.int64)
            valid = index >= 0
            if valid.any() and int(index.max()) >= source.numel():
                raise ValueError(f'the source-index map of {sample.metainfo["img_path"]} points '
                                 'outside its label: was the image changed after loading?')
            target[valid] = source[index[valid]].long()
            sample.gt_sem_seg = PixelData(data=target)
            del sample.pseudo_label_index
        elapsed = time.perf_counter() - start
        covered = sum(int((s.gt_sem_seg.data != IGNORE_INDEX).sum()) for s in data_samples)
        total = sum(s.gt_sem_seg.data.numel() for s in data_samples)
        hub = MessageHub.get_current_instance()
        hub.update_scalar('train/label_coverage', covered / max(total, 1))
        # not '*time*': mmengine's log processor would average it over 10 iterations, carried
        # over a resume (a warm start would show the cold run's generation time)
        hub.update_scalar('train/label_seconds', elapsed)
        hub.update_scalar('train/label_generated', float(self.generated - generated_before))
        hub.update_scalar('train/label_waited', float(self.waited - waited_before))
        # the log shows the logged iteration's values only (every 50th by default)
        hub.update_scalar('train/label_generated_total', float(self.generated))
        self.read += sum(bool(s.metainfo.get('pseudo_label_cached')) for s in data_samples)
        hub.update_scalar('train/label_read_total', float(self.read))
        self._announce(data_samples)
        if generated_before == 0 and self.generated:
            print_log(f'online labels: making labels with {self.cache.model} '
                      f'({self.labeler.engine.model_id}) + {type(self.cache.generator).__name__}',
                      logger='current')

    def _memory_advice(self, exc: BaseException) -> str:
        """What to change when making a batch's labels ran the GPU out of memory: the labeler
        shares the GPU with the segmentor being trained."""
        batch, dtype = self.options['batch_size'], self.options['dtype']
        first_line = (str(exc).splitlines() or [''])[0]
        smaller = [f'model.data_preprocessor.label_batch_size={batch // 2}'] if batch > 1 else []
        if dtype == 'float32':
            smaller.append('model.data_preprocessor.engine_dtype=float16')
        return (f'the GPU ran out of memory making online labels ({first_line}) beside the '
                f'model being trained (label_batch_size {batch}, engine_dtype {dtype}). Labels '
                f'made before are kept in {self.cache.cache_dir}. '
                'Make the labels before training, when the GPU holds only the diffusion model: '
                'python tools/prefill_labels.py CONFIG (training then loads none)'
                + (f', or --cfg-options {" ".join(smaller)}' if smaller else '')
                + '; then rerun training (--resume continues from its last checkpoint)')

    def _announce(self, data_samples: Sequence) -> None:
        """Log once which label cache the targets come from (a warm or prefilled run makes no
        label, so the line of the first label made never comes)."""
        spec = next((s.metainfo['pseudo_label_cache'] for s in data_samples
                     if 'pseudo_label_cache' in s.metainfo), None)
        if self.announced or spec is None:
            return
        print_log(f"online labels: cache {spec['cache_dir']} (model {spec['model']}, "
                  f"{spec['generator']['type']}); labels not cached yet are made on first use",
                  logger='current')
        self.announced = True
