"""Engines on pipelines users already hold: shared modules, processors of their own, threads.

A pipeline handed to ``from_pipeline`` keeps its device and dtype; models moved or cast under an
engine, CPU offload, a user's processor named like diffusers' and a second thread capturing the
same U-Net are each refused naming the fix, where they gave wrong maps or torch's errors."""
import threading

import pytest
import torch

from mmdiffseg.attention import (CaptureRequest, CaptureSpec, DiffusionAttentionEngine,
                                 capture_attention, testing)

SD2 = 'stable-diffusion-2-1-base'
SPEC = CaptureSpec([CaptureRequest('self', 8)])
IMAGE = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))


@pytest.fixture
def pipeline(sd_config_dir):
    """A fresh tiny pipeline (its modules are cast by the tests)."""
    from diffusers import StableDiffusionPipeline
    engine = testing.tiny_engine(sd_config_dir(SD2))
    return StableDiffusionPipeline(vae=engine.vae, text_encoder=engine.text_encoder,
                                   tokenizer=engine.tokenizer, unet=engine.unet,
                                   scheduler=engine.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def test_from_pipeline_keeps_the_pipelines_dtype_and_refuses_models_cast_under_an_engine(
        pipeline):
    """The engine defaulted to float32 on the CPU whatever the pipeline held, casting the user's
    pipeline in place; a second engine in another dtype then broke the first one deep in the VAE
    ('Input type (float) and bias type (c10::BFloat16) should be the same')."""
    pipeline.to(torch.bfloat16)
    engine = DiffusionAttentionEngine.from_pipeline(pipeline, 'mine')
    assert engine.dtype == torch.bfloat16 and engine.device == torch.device('cpu')
    assert {pipeline.unet.dtype, pipeline.vae.dtype, pipeline.text_encoder.dtype} == \
        {torch.bfloat16}
    engine.extract(IMAGE, capture=SPEC, image_size=64)
    DiffusionAttentionEngine.from_pipeline(pipeline, 'mine', dtype=torch.float32)
    for call in (lambda: engine.extract(IMAGE, capture=SPEC, image_size=64),
                 lambda: engine.generate('a cat', steps=1, capture=SPEC, height=64, width=64)):
        with pytest.raises(RuntimeError, match=r'^the engine runs in torch.bfloat16 on cpu, but '
                                               r'its vae is in torch.float32 on cpu now: .*'
                                               r'build each engine from its own pipeline$'):
            call()


def test_a_pipeline_offloading_to_the_cpu_is_refused_naming_the_fix(pipeline):
    """accelerate's offload hooks (``_hf_hook``; sequential offload leaves meta tensors) stopped
    the engine with 'Cannot copy out of meta tensor'."""
    pipeline.unet.conv_in._hf_hook = object()   # what enable_sequential_cpu_offload attaches
    with pytest.raises(ValueError, match=r'^the pipeline offloads its unet to the CPU '
                                         r'\(enable_model_cpu_offload .*pipe.remove_all_hooks'):
        DiffusionAttentionEngine.from_pipeline(pipeline, 'mine')
    del pipeline.unet.conv_in._hf_hook
    DiffusionAttentionEngine.from_pipeline(pipeline, 'mine')


def test_a_misspelt_engine_option_is_named_with_its_nearest_spelling(pipeline):
    """``from_pipeline(pipe, id, chunk_byte=...)`` raised Python's bare 'unexpected keyword
    argument' from the engine's constructor, where ``from_pretrained`` names the option meant."""
    with pytest.raises(TypeError, match=r"^DiffusionAttentionEngine: unknown option 'chunk_byte' "
                                        r"\(did you mean 'chunk_bytes'\?\); its options: .*"
                                        r"map_backend"):
        DiffusionAttentionEngine.from_pipeline(pipeline, 'mine', chunk_byte=2 ** 20)
    assert DiffusionAttentionEngine.from_pipeline(pipeline, 'mine', chunk_bytes=2 ** 20
                                                  ).chunk_bytes == 2 ** 20


def test_a_processor_named_like_diffusers_but_not_its_class_is_refused(pipeline):
    """The check went by class name: a user's ``AttnProcessor`` (here halving the output) passed,
    and captured steps ran plain SDPA in its place, changing the images and maps silently."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    class AttnProcessor(AttnProcessor2_0):
        def __call__(self, attn, hidden_states, *args, **kwargs):
            return 0.5 * super().__call__(attn, hidden_states, *args, **kwargs)

    engine = DiffusionAttentionEngine.from_pipeline(pipeline, 'mine')
    engine.unet.set_attn_processor(AttnProcessor())
    with pytest.raises(ValueError, match=rf'runs {__name__}\.AttnProcessor, not plain attention'):
        engine.extract(IMAGE, capture=SPEC, image_size=64)
    engine.unet.set_attn_processor(AttnProcessor2_0())
    engine.extract(IMAGE, capture=SPEC, image_size=64)


def test_a_second_thread_capturing_the_same_unet_is_refused(pipeline):
    """Two threads capturing one U-Net (two engines on one pipeline included) added each other's
    forwards into their maps; the second is refused now, sessions nested in one thread are not,
    and the U-Net is free again once the first thread's session ends."""
    unet = pipeline.unet
    inside, release, errors = threading.Event(), threading.Event(), []

    def hold():
        with capture_attention(unet, SPEC, 8, batch_size=1):
            nested = CaptureSpec([CaptureRequest('cross', 8)])
            with capture_attention(unet, nested, 8, batch_size=1):
                inside.set()
                release.wait(60)

    def second():
        try:
            with capture_attention(unet, SPEC, 8, batch_size=1):
                pass
        except RuntimeError as err:
            errors.append(str(err))

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(60)
    other = threading.Thread(target=second)
    other.start()
    other.join(60)
    release.set()
    holder.join(60)
    assert len(errors) == 1 and errors[0].startswith(
        'another thread is capturing attention on this U-Net: a capture is not thread-safe')
    assert 'its own engine built from its own pipeline' in errors[0]
    second()   # free again
    assert len(errors) == 1


def test_a_thread_capturing_the_unet_under_its_compile_wrapper_holds_the_unet(pipeline):
    """``torch.compile(unet)`` (the engine's --compile) is a wrapper around the same U-Net: a
    thread capturing through it holds the U-Net itself against another thread."""
    from mmdiffseg.attention.capture_threads import captured_by_this_thread
    compiled = torch.compile(pipeline.unet)
    inside, release = threading.Event(), threading.Event()

    def hold():
        with captured_by_this_thread(compiled):
            inside.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(60)
    try:
        with pytest.raises(RuntimeError, match='another thread is capturing attention'):
            with captured_by_this_thread(pipeline.unet):
                pass
    finally:
        release.set()
        holder.join(60)


def test_models_moved_to_another_device_type_under_an_engine_are_refused(pipeline):
    """``pipe.to('cuda')`` under a CPU engine (here: the meta device) stopped deep in the VAE
    with a device mismatch; the engine names what moved."""
    engine = DiffusionAttentionEngine.from_pipeline(pipeline, 'mine')
    pipeline.vae.to('meta')
    with pytest.raises(RuntimeError, match=r'^the engine runs in torch.float32 on cpu, but its '
                                           r'vae is in torch.float32 on meta now'):
        engine.extract(IMAGE, capture=SPEC, image_size=64)
