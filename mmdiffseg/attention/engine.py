"""DiffusionAttentionEngine: Stable Diffusion (diffusers) in, averaged attention maps out.

``extract`` reads attention from real images the way DiffSeg and iSeg do (ALGORITHMS.md 1.1, 3.1):
bilinear resize to a square, scale to [-1, 1], VAE posterior mean x scaling factor, optional
noise with a fixed seed (DDPM's ``add_noise`` on the model's betas, whatever sampler its folder
names: :func:`.noise.training_noiser`), ONE U-Net forward at a fixed timestep with the
prompt's embeddings (no classifier-free guidance). ``generate`` runs text-to-image sampling the way
SeeDiff does (ALGORITHMS.md 2.1): the pipeline's scheduler, CFG with the uncond prompt, attention of
the conditional half averaged over the denoising steps. Only what the capture spec asks for is
computed explicitly (see :mod:`.capture`); nothing here knows about masks.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.logging import print_log

from ..options import check_seed, check_whole, check_wholes
from ..provenance import model_id_of, model_path, withdrawn_model
from .capture import CaptureSession, capture_attention
from .images import ImagesLike, preprocess_images
from .loading import (check_engine_options, dtype_option, hub_load_failure,
                      loading_bars_where_read, placed, single_file_checkpoint,
                      single_file_problem, torch_device, torch_dtype)
from .maps import AttentionMaps, CaptureSpec, NonFiniteMaps, as_capture_spec
from .model_check import config_problems, folder_problems
from .noise import check_noise_draw, shared_noise, training_noiser
from .prompts import encode_prompts, enhance_class_tokens, token_positions
from .unet_layers import unet_attention_layers


class DiffusionAttentionEngine:
    """A Stable Diffusion 1.x / 2.x-base pipeline that returns :class:`AttentionMaps`.

    Build with :meth:`from_pretrained` (hub id or local diffusers folder) or from components.

    Args:
        vae, unet, text_encoder, tokenizer, scheduler: the pipeline's components.
        model_id: name used in manifests and cache keys.
        device, dtype: where and in which precision the models run (maps are always float32).
        chunk_bytes: float32 logit bytes the torch map path computes at once per captured layer
            (``None``: from the device, see :mod:`.head_maps`).
        map_backend: how maps are computed: ``'auto'`` (fused Triton kernel on CUDA, torch
            elsewhere), ``'torch'`` or ``'triton'`` (:mod:`.head_maps`).
        compile_unet: ``torch.compile`` the U-Net (``unet.compile()``; a dict: its options,
            e.g. ``dict(backend='eager')``): opt-in, compiled at the first calls of each shape,
            not bit-exact against eager; capture runs in the compiled graph.
    """

    def __init__(self, vae, unet, text_encoder, tokenizer, scheduler, model_id: str,
                 device: Union[str, torch.device] = 'cpu', dtype: torch.dtype = torch.float32,
                 chunk_bytes: Optional[int] = None, map_backend: str = 'auto',
                 compile_unet: Union[bool, Dict[str, Any]] = False):
        check_engine_options(dict(chunk_bytes=chunk_bytes, map_backend=map_backend,
                                  compile_unet=compile_unet))
        self.device, self.dtype = torch_device(device), torch_dtype(dtype)
        self.vae, self.unet, self.text_encoder = (placed(m, self.device, self.dtype)
                                                  for m in (vae, unet, text_encoder))
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.noiser = training_noiser(scheduler.config)  # extract's add_noise, any sampler
        self.model_id, self.chunk_bytes = str(model_id), chunk_bytes
        self._served = set()  # (capture spec, image size) pairs check_capture has passed
        self.map_backend = map_backend
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if compile_unet:
            options = {} if compile_unet is True else dict(compile_unet)
            self.unet.compile(**options)
            print_log(f'the U-Net is compiled (torch.compile, {options or "defaults"}) by its '
                      'first call of each input shape: the first batch waits for it (minutes '
                      'with inductor)', logger='current')

    @classmethod
    def from_pretrained(cls, id_or_folder: Union[str, Path], dtype: torch.dtype = torch.float32,
                        device: Union[str, torch.device] = 'cpu', **kwargs) -> 'DiffusionAttentionEngine':
        """Load a Stable Diffusion pipeline with diffusers (hub id or local diffusers folder).

        ``kwargs`` go to ``StableDiffusionPipeline.from_pretrained`` (e.g. ``variant='fp16'``,
        ``revision``), except ``chunk_bytes``, ``map_backend`` and ``compile_unet`` which go to
        the engine.

        Raises:
            OSError: the model is neither a local folder nor downloadable / in the hub cache (a
                withdrawn hub id names the repository that hosts its weights now), or is a
                single-file checkpoint (the message gives the conversion into a folder).
        """
        from diffusers import StableDiffusionPipeline
        if not isinstance(id_or_folder, (str, Path)):
            raise TypeError(f'from_pretrained takes a hub id or a diffusers folder, not a '
                            f'{type(id_or_folder).__name__}; for a pipeline already loaded: '
                            'DiffusionAttentionEngine.from_pipeline(pipe, model_id)')
        check_engine_options(kwargs)
        dtype, device = torch_dtype(dtype), torch_device(device)
        options = dict(chunk_bytes=kwargs.pop('chunk_bytes', None),
                       map_backend=kwargs.pop('map_backend', 'auto'),
                       compile_unet=kwargs.pop('compile_unet', False))
        kwargs.setdefault('safety_checker', None)  # the engine never runs one
        kwargs.setdefault('requires_safety_checker', False)
        if importlib.util.find_spec('accelerate') is None:  # diffusers would only warn and fall back
            kwargs.setdefault('low_cpu_mem_usage', False)
        checkpoint = single_file_checkpoint(id_or_folder)
        if checkpoint is not None:
            why, fix = single_file_problem(checkpoint)
            raise OSError(f'cannot load Stable Diffusion model {str(id_or_folder)!r}: {why}. '
                          f'Fix: {fix}')
        folder = model_path(id_or_folder)
        is_folder = folder.is_dir()
        source = str(folder.resolve()) if is_folder else str(id_or_folder)
        problems = folder_problems(folder, kwargs.get('variant')) if \
            (folder / 'model_index.json').is_file() else []
        if problems:
            raise OSError(f'cannot read the Stable Diffusion folder {source}: '
                          + '; '.join(problems))
        withdrawn = None if is_folder else withdrawn_model(source, kwargs.get('cache_dir'))
        if withdrawn:
            raise OSError(f'cannot load Stable Diffusion model: {withdrawn}')
        try:
            with loading_bars_where_read():
                pipe = StableDiffusionPipeline.from_pretrained(source, **dtype_option(dtype),
                                                               **kwargs)
        except (ImportError, RuntimeError) as err:  # a sampler's missing package; weights that do
            # not fit their config (a config edited: 'size mismatch for ...')
            where = 'folder' if is_folder else 'model'
            raise OSError(f'cannot load the Stable Diffusion {where} {source}: {err}') from err
        except (OSError, ValueError) as err:
            if is_folder:
                raise OSError(f'cannot load the Stable Diffusion folder {source}: {err}') from err
            raise OSError(hub_load_failure(source, err, kwargs.get('cache_dir'),
                                           kwargs.get('variant'))) from err
        problems = [] if is_folder else config_problems(  # a hub id: configs known once loaded
            pipe.unet.config, pipe.vae.config, pipe.text_encoder.config.to_dict())
        if problems:
            raise OSError(f'cannot read Stable Diffusion model {source!r}: ' + '; '.join(problems))
        model_id = model_id_of(source)
        return cls.from_pipeline(pipe, model_id, device=device, dtype=dtype, **options)

    @classmethod
    def from_pipeline(cls, pipe, model_id: str, **kwargs) -> 'DiffusionAttentionEngine':
        """An engine on the components of a built diffusers ``StableDiffusionPipeline``, shared
        with it: on the pipeline's device and in its U-Net's dtype unless ``device`` / ``dtype``
        say otherwise (which moves or casts the pipeline's own modules).

        Raises:
            TypeError: an option the engine does not take, with its nearest spelling.
            ValueError: the pipeline offloads its models to the CPU (accelerate's hooks), or
                its models are not a Stable Diffusion 1.x / 2.x text-to-image model's (SDXL,
                inpainting: :func:`~.model_check.config_problems`, as ``from_pretrained``).
        """
        from ..registry import unknown_options, unknown_options_error
        if unknown_options(cls, kwargs):
            raise unknown_options_error(cls, kwargs)
        problems = config_problems(pipe.unet.config, pipe.vae.config,
                                   pipe.text_encoder.config.to_dict())
        if problems:
            raise ValueError(f'cannot build the engine on this {type(pipe).__name__}: '
                             + '; '.join(problems))
        offloaded = [name for name in ('unet', 'vae', 'text_encoder') if any(
            hasattr(module, '_hf_hook') for module in getattr(pipe, name).modules())]
        if offloaded:
            raise ValueError(f'the pipeline offloads its {", ".join(offloaded)} to the CPU '
                             '(enable_model_cpu_offload / enable_sequential_cpu_offload), which '
                             'the engine does not support: it keeps every model on its device. '
                             'Call pipe.remove_all_hooks() first, or build the engine from a '
                             'pipeline without offload')
        kwargs.setdefault('device', pipe.unet.device)
        kwargs.setdefault('dtype', pipe.unet.dtype)
        return cls(pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler,
                   model_id=model_id, **kwargs)

    def check_capture(self, capture: CaptureSpec, image_size: int = 512) -> None:
        """Check that this U-Net has every layer, resolution and head ``capture`` asks for at
        ``image_size``, without running it (``extract``, ``generate`` and the tools call this
        before any work).

        Raises:
            ValueError: naming the request and what the U-Net offers, and the image sizes that
                serve ``capture`` where other sizes do.
        """
        capture = as_capture_spec(capture)
        if (capture, image_size) in self._served:  # extract / generate check every batch
            return
        layers = unet_attention_layers(self.unet, self._latent_size(image_size, image_size))
        try:
            CaptureSession(capture, layers, batch_size=1)
            self._served.add((capture, image_size))
        except ValueError as exc:
            present = {(layer.kind, layer.resolution, layer.name) for layer in layers}
            if all(any(p[:2] == (r.kind, r.resolution) for p in present) and
                   all((r.kind, r.resolution, name) in present for name in r.layers or ())
                   for r in capture.requests):
                raise  # every grid and named layer is here: the request's error (heads) says why
            sizes = self._capture_sizes(capture)
            if not sizes:  # no size serves it: the request's error says why
                raise
            grids = '/'.join(map(str, sorted({r.resolution for r in capture.requests})))
            own = '/'.join(map(str, sorted({layer.resolution for layer in layers})))
            raise ValueError(
                f'image size {image_size} cannot be used: the capture spec reads attention at '
                f'{grids} token grids, which this model has at image size(s) {sizes} only '
                f'(latent = image size / {self.vae_scale_factor}, halved per U-Net level); use '
                f'one of those sizes, or read the grids {image_size} has ({own}: e.g. '
                'DiffSeg(resolutions=..., cross_resolutions=...), SeeDiff(resolutions='
                f'resolutions_for({image_size // self.vae_scale_factor})); iSeg reads fixed '
                f'layers). At {image_size}: {exc}') from exc

    def _capture_sizes(self, capture: CaptureSpec, largest: int = 2048) -> List[int]:
        """The image sizes up to ``largest`` at which the U-Net serves ``capture``."""
        step = 2 ** (len(self.unet.down_blocks) - 1)  # the U-Net's downsampling of the latent
        sizes = []
        for latent in range(step, largest // self.vae_scale_factor + 1, step):
            try:
                CaptureSession(capture, unet_attention_layers(self.unet, latent), batch_size=1)
            except ValueError:
                continue
            sizes.append(latent * self.vae_scale_factor)
        return sizes

    # -- helpers ----------------------------------------------------------------------------
    def _check_placement(self) -> None:
        """Refuse to run on models moved or cast since the engine placed them (they are a
        pipeline's: ``pipe.to(...)``, or another engine built on it with another device or
        dtype), which stopped deep in the VAE with a dtype mismatch."""
        for name in ('vae', 'unet', 'text_encoder'):
            module = getattr(self, name)
            device = module.device   # (cuda:0 where the engine says cuda: the same device)
            if module.dtype != self.dtype or device.type != self.device.type or \
                    self.device.index not in (None, device.index):
                raise RuntimeError(
                    f'the engine runs in {self.dtype} on {self.device}, but its {name} is in '
                    f'{module.dtype} on {module.device} now: its models are the pipeline\'s, and '
                    'something moved or cast them since (pipe.to(...), or another engine built '
                    'from the same pipeline with another device or dtype); build each engine '
                    'from its own pipeline')

    def _latent_size(self, height: int, width: int) -> int:
        if height != width:
            raise ValueError(f'attention capture needs a square image, got {height}x{width}')
        if height % self.vae_scale_factor:
            raise ValueError(f'image size {height} is not a multiple of the VAE factor '
                             f'{self.vae_scale_factor}')
        return height // self.vae_scale_factor

    def _positions(self, prompts: Sequence[str],
                   class_names: Optional[Sequence[Sequence[str]]]) -> List[Dict[str, List[int]]]:
        if class_names is None:
            return [{} for _ in prompts]
        if len(class_names) != len(prompts):
            raise ValueError(f'class_names has {len(class_names)} entries for {len(prompts)} prompts')
        for b, names in enumerate(class_names):
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise ValueError(f'class_names[{b}] = {names!r}: class_names holds one list of '
                                 "names per prompt, e.g. [['dog', 'cat'], ['cat']]")
        return [token_positions(self.tokenizer, p, names) for p, names in zip(prompts, class_names)]

    def check_timestep(self, timestep: int) -> int:
        """``timestep`` checked against the scheduler's training range."""
        steps = self.scheduler.config.num_train_timesteps
        whole = check_whole('the engine', 'timestep', timestep)  # 100.5 refused, not truncated
        if not 0 <= whole < steps:
            raise ValueError(f'timestep={timestep}: the scheduler was trained on timesteps 0..'
                             f'{steps - 1}; pass one of those (DiffSeg 300, iSeg 100)')
        return whole

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """VAE posterior mean x ``scaling_factor`` of images given to :func:`preprocess_images`,
        ``(B, 4, S/8, S/8)``."""
        pixels = pixels.to(self.device, self.dtype)
        return self.vae.encode(pixels).latent_dist.mean * self.vae.config.scaling_factor

    def _check_capture_steps(self, capture: CaptureSpec, steps: int) -> None:
        """Refuse ``capture.steps`` outside the U-Net calls the scheduler makes for ``steps``."""
        if capture.steps is None:
            return
        scheduler = type(self.scheduler).from_config(self.scheduler.config)
        scheduler.set_timesteps(steps)
        calls = len(scheduler.timesteps)  # one U-Net call per timestep
        bad = [s for s in capture.steps if not 0 <= s < calls]
        if bad or not capture.steps:
            raise ValueError(
                f'capture.steps={capture.steps}: {bad or "no step"} out of range: it indexes '
                f'U-Net calls (scheduler.timesteps), not denoising steps, and with steps={steps} '
                f'the {type(self.scheduler).__name__} makes {calls} calls: indexes 0..{calls - 1}; '
                'pass indexes in that range, or capture.steps=None for all')

    # -- public API -------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, images: ImagesLike, prompts: Optional[Sequence[str]] = None,
                class_names: Optional[Sequence[Sequence[str]]] = None, timestep: int = 300,
                noise: Union[None, int, torch.Tensor] = None, noise_draw: str = 'cpu',
                token_enhance: float = 1.0,
                token_offsets: Optional[Dict[str, Sequence[int]]] = None,
                capture: CaptureSpec = CaptureSpec(), image_size: int = 512) -> AttentionMaps:
        """Attention of one U-Net forward on real images (DiffSeg / iSeg extraction).

        Args:
            images: ``(B, 3, H, W)`` uint8 or float RGB in [0, 255], or PIL images or ``HxWx3``
                arrays, alone or in a list (grayscale and RGBA are converted; :mod:`.images`).
            prompts: one per image, or one string for every image; ``None`` = the empty prompt
                ``""`` for every image.
            class_names: per image, class names whose token positions to record (each must occur
                in its prompt).
            timestep: U-Net timestep (DiffSeg 300, iSeg 100), within the scheduler's range.
            noise: ``None`` = clean latents; an int seeds one Gaussian noise shared by all images;
                a tensor is the noise: ``(4, h, w)`` or ``(1, 4, h, w)`` for all images,
                ``(B, 4, h, w)`` one per image (``h = w = image_size / 8``). Added by DDPM's
                ``add_noise`` at ``timestep``.
            noise_draw: how a seeded noise is drawn: ``'cpu'`` (float32, CPU generator, the same
                on every device) or ``'cuda_float16'`` (iSeg's release: CUDA generator, float16;
                needs a CUDA engine).
            token_enhance: iSeg's Cat-Cross factor on the class-token text embeddings.
            token_offsets: class name -> offsets within its tokens to enhance (default: all).
            capture: what to capture.
            image_size: side of the square the images are resized to.
        """
        self._check_placement()
        latent_size = self._latent_size(image_size, image_size)
        capture, timestep = as_capture_spec(capture), self.check_timestep(timestep)
        self.check_capture(capture, image_size)
        check_noise_draw(noise_draw, self.device)
        if noise is not None and not isinstance(noise, torch.Tensor):
            noise = check_seed('the engine', 'noise (a seed)', noise)
        pixels = preprocess_images(images, image_size)
        batch = pixels.shape[0]
        if class_names is not None and len(class_names) != batch:
            raise ValueError(f'class_names: {len(class_names)} lists for {batch} images (one list '
                             'of names per image)')
        if token_enhance != 1 and class_names is None:
            raise ValueError(f'token_enhance={token_enhance} enhances the tokens of class_names: '
                             'pass class_names (one list per image), or token_enhance=1')
        prompts = [prompts or ''] * batch if prompts is None or isinstance(prompts, str) \
            else list(prompts)
        if len(prompts) != batch:
            raise ValueError(f'prompts: {len(prompts)} for {batch} images (one per image, or one '
                             'string for all)')
        positions = self._positions(prompts, class_names)
        latents = self._encode(pixels)
        t = torch.full((batch,), timestep, dtype=torch.long, device=self.device)
        if noise is not None:
            latents = self.noiser.add_noise(latents, shared_noise(noise, latents, noise_draw), t)
        embeddings = encode_prompts(self.tokenizer, self.text_encoder, prompts)
        embeddings = enhance_class_tokens(embeddings, positions, token_enhance, token_offsets)
        with capture_attention(self.unet, capture, latent_size, batch, chunk_bytes=self.chunk_bytes,
                               map_backend=self.map_backend) as session:
            self.unet(latents, t, encoder_hidden_states=embeddings)
        return AttentionMaps(session.results(), prompts, positions, (image_size, image_size))

    def pipeline(self):
        """A diffusers ``StableDiffusionPipeline`` sharing this engine's components."""
        from diffusers import StableDiffusionPipeline
        pipe = StableDiffusionPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
            scheduler=self.scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def generate(self, prompts: Union[str, Sequence[str]],
                 class_names: Optional[Sequence[Sequence[str]]] = None, steps: int = 50,
                 guidance_scale: float = 7.0, seed: Union[int, Sequence[int]] = 0,
                 capture: CaptureSpec = CaptureSpec(), height: int = 512, width: int = 512,
                 negative_prompt: Union[str, Sequence[str], None] = None
                 ) -> Tuple[torch.Tensor, AttentionMaps]:
        """Text -> images with the pipeline's scheduler, plus attention averaged over the
        denoising steps, conditional half only (SeeDiff). A step is one U-Net call:
        ``capture.steps`` indexes ``scheduler.timesteps`` (PNDM, the SD configs' scheduler, makes
        ``steps + 1`` calls from 2 steps on, as in SeeDiff's loop over the timesteps); an index
        out of range is refused before any U-Net call.

        Args:
            seed: one int for all prompts (prompt ``i`` uses ``seed + i``) or one per prompt;
                the initial latents come from CPU generators, so a seed gives the same images on
                every device.
            negative_prompt: the uncond prompt, one for all prompts or one per prompt; None:
                the empty prompt (as diffusers and SeeDiff's release).

        Returns:
            ``(images, maps)``: uint8 ``(B, 3, height, width)`` RGB on the CPU and the maps.

        Raises:
            NonFiniteMaps: the decoded images hold NaN or inf (an overflow).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError(f'prompts={prompts}: generate needs at least one prompt (one image '
                             'per prompt): pass a string or a non-empty list of strings')
        if seed is None:
            raise ValueError('seed=None: generate takes an int seed (prompt i uses seed + i) or '
                             'one per prompt, so that its images can be made again; for new '
                             'ones pass another, e.g. seed=random.randrange(2**31)')
        seeds = [check_whole('generate', 'seed', seed) + i for i in range(len(prompts))] \
            if np.ndim(seed) == 0 else list(check_wholes('generate', 'seed', seed, '[0, 1]'))
        seeds = [check_seed('generate', f'seed of prompt {i}', s) for i, s in enumerate(seeds)]
        negative_prompt = '' if negative_prompt is None else negative_prompt
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) \
            else list(negative_prompt)
        for what, values in (('seed', seeds), ('negative_prompt', negatives)):
            if len(values) != len(prompts):
                raise ValueError(f'{what}: {len(values)} for {len(prompts)} prompts (one per '
                                 'prompt, or a single one)')
        if int(steps) < 1:
            raise ValueError(f'steps={steps}: at least one denoising step')
        self._check_placement()
        latent_size, capture = self._latent_size(height, width), as_capture_spec(capture)
        self.check_capture(capture, height)
        self._check_capture_steps(capture, int(steps))
        positions = self._positions(prompts, class_names)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        with capture_attention(self.unet, capture, latent_size, len(prompts), steps=capture.steps,
                               chunk_bytes=self.chunk_bytes, map_backend=self.map_backend) as session:
            images = self.pipeline()(
                prompts, height=height, width=width, num_inference_steps=steps,
                guidance_scale=guidance_scale, negative_prompt=negatives,
                generator=generators, output_type='pt').images
        if not bool(torch.isfinite(images).all()):  # uint8 would make NaN black, silently
            raise NonFiniteMaps('the generated images hold NaN or inf: the VAE or the U-Net '
                                'overflowed (float16: run in float32 or bfloat16)')
        # truncated to uint8 as SeeDiff's release (ptp_utils.latent2image: (x * 255).astype(uint8));
        # diffusers' PIL output rounds, one level brighter on half the pixels, which PAMR feels
        images = (images.float().clamp(0, 1) * 255).floor().to(torch.uint8).cpu()
        return images, AttentionMaps(session.results(), prompts, positions, (height, width))
