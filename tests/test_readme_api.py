"""The README's Python API example runs as written (tiny random-weights SD 2-base, SD 1.4 for
SeeDiff), with the image inputs it documents: a list of HxWx3 uint8 arrays of any sizes, or a
(B, 3, H, W) tensor."""
import numpy as np
import torch
from PIL import Image

from sample_data import shared_path


def test_readme_python_api_end_to_end():
    import mmdiffseg  # noqa: F401
    from mmdiffseg.attention import DiffusionAttentionEngine
    from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
    from mmdiffseg.registry import MASK_GENERATORS

    folder = cached_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    engine = DiffusionAttentionEngine.from_pretrained(folder, dtype=torch.float32, device='cpu')
    voc = sorted(shared_path('voc2012_val_samples', 'JPEGImages').glob('*.png'))[:2]
    # a list of HxWx3 uint8 arrays of different sizes
    images = [np.array(Image.open(p).convert('RGB').resize(size))
              for p, size in zip(voc, [(160, 128), (96, 120)])]

    iseg = MASK_GENERATORS.build(dict(type='ISeg', vocabulary='voc', cross_heads=None,
                                      self_heads=[0])).to(engine.device)
    names = [['dog', 'person'], ['cat']]
    maps = engine.extract(images, capture=iseg.capture_spec, **iseg.extract_kwargs(names))
    labels = iseg(maps, images, names)
    assert [tuple(label.shape) for label in labels] == [(128, 160), (120, 96)]
    allowed = [{0, iseg.classes.index('dog'), iseg.classes.index('person')},
               {0, iseg.classes.index('cat')}]
    for b in range(2):
        assert labels[b].dtype == torch.int64
        assert set(labels[b].unique().tolist()) <= allowed[b]

    diffseg = MASK_GENERATORS.build(dict(type='DiffSeg', kl_thresholds=(1.1,) * 3))
    maps = engine.extract(images, capture=diffseg.capture_spec, **diffseg.extract_kwargs(None))
    segments = diffseg(maps, images, None)
    assert [tuple(s.shape) for s in segments] == [(128, 160), (120, 96)]
    assert all(s.min() >= 0 and s.max() < 255 for s in segments)
    # same-size images: the list and the (B, 3, H, W) tensor give the same labels
    same = [images[0], images[0][::-1].copy()]
    batch = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in same])
    maps = engine.extract(batch, capture=diffseg.capture_spec, **diffseg.extract_kwargs(None))
    from_tensor = diffseg(maps, batch, None)
    assert from_tensor.shape == (2, 128, 160)
    assert torch.equal(torch.stack(diffseg(maps, same, None)), from_tensor)

    sd14 = DiffusionAttentionEngine.from_pretrained(
        cached_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-v1-4')),
        dtype=torch.float32, device='cpu')
    seediff = MASK_GENERATORS.build(dict(type='SeeDiff', classes=['background', 'dog'],
                                         pamr_iter=5, steps=2))
    kw = seediff.generate_kwargs(['dog'])
    gen_images, maps = sd14.generate(kw['prompts'], class_names=kw['class_names'],
                                       steps=kw['steps'], guidance_scale=kw['guidance_scale'],
                                       seed=0, capture=seediff.capture_spec)
    masks = seediff(maps, gen_images, [['dog']])
    assert gen_images.shape == (1, 3, 512, 512) and gen_images.dtype == torch.uint8
    assert masks.shape == (1, 512, 512) and set(masks.unique().tolist()) <= {0, 1}
