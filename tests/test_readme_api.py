"""The README's Python API example runs as written (tiny random-weights SD 2-base, 2 images)."""
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
    voc = shared_path('voc2012_val_samples', 'JPEGImages')
    images = torch.stack([
        torch.from_numpy(np.array(Image.open(p).convert('RGB').resize((160, 128)))).permute(2, 0, 1)
        for p in sorted(voc.glob('*.png'))[:2]])

    iseg = MASK_GENERATORS.build(dict(type='ISeg', vocabulary='voc', cross_heads=None,
                                      self_heads=[0])).to(engine.device)
    names = [['dog', 'person'], ['cat']]
    maps = engine.extract(images, capture=iseg.capture_spec, **iseg.extract_kwargs(names))
    labels = iseg(maps, images.float(), names)
    assert labels.shape == (2, 128, 160) and labels.dtype == torch.int64
    allowed = [{0, iseg.classes.index('dog'), iseg.classes.index('person')},
               {0, iseg.classes.index('cat')}]
    for b in range(2):
        assert set(labels[b].unique().tolist()) <= allowed[b]

    diffseg = MASK_GENERATORS.build(dict(type='DiffSeg', kl_thresholds=(1.1,) * 3))
    maps = engine.extract(images, capture=diffseg.capture_spec, **diffseg.extract_kwargs(None))
    segments = diffseg(maps, images.float(), None)
    assert segments.shape == (2, 128, 160) and segments.min() >= 0 and segments.max() < 255

    seediff = MASK_GENERATORS.build(dict(type='SeeDiff', classes=['background', 'dog'],
                                         pamr_iter=5, steps=2))
    kw = seediff.generate_kwargs(['dog'])
    gen_images, maps = engine.generate(kw['prompts'], class_names=kw['class_names'],
                                       steps=kw['steps'], guidance_scale=kw['guidance_scale'],
                                       seed=0, capture=seediff.capture_spec)
    masks = seediff(maps, gen_images.float(), [['dog']])
    assert gen_images.shape == (1, 3, 512, 512) and gen_images.dtype == torch.uint8
    assert set(masks.unique().tolist()) <= {0, 1}
