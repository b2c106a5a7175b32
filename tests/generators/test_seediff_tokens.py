"""SeeDiff's prompt tokens: which tokens each class's cross-attention reads, as the release reads
them (tvmonitor's and COCO's two-word names read the end token), and the corrected offsets."""
import pytest
import torch
from mmengine import Config

from sample_data import REPO, shared_path
from mmdiffseg.attention.maps import AttentionMaps
from mmdiffseg.generators import SeeDiff
from mmdiffseg.generators.class_names import VOC_CLASSES as VOC
from mmdiffseg.generators.seediff import CROSS_NAME
from mmdiffseg.registry import MASK_GENERATORS


def test_token_offsets_may_read_past_the_name_as_released():
    """Released tvmonitor: 'tv' (5) and the token two after it (7, the end token), not
    'monitor' (6): each layer's map normalised, the two summed."""
    n = 256
    cross = torch.zeros(1, 1, n, 77)
    cross[0, 0, :, 5] = torch.linspace(0, 2, n)
    cross[0, 0, :, 6] = torch.linspace(2, 0, n)
    cross[0, 0, :64, 7] = 3
    maps = AttentionMaps({CROSS_NAME: cross}, ['a photo of a tvmonitor'],
                         [{'tvmonitor': [5, 6]}])
    ca = SeeDiff(VOC, token_offsets={'tvmonitor': [0, 2]}).class_cross_attention(
        maps, [['tvmonitor']])
    expected = torch.linspace(0, 1, n) + (torch.arange(n) < 64).float()
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert torch.allclose(ca[0, 0], expected, atol=1e-6)


@pytest.mark.parametrize('built_from', ['preset', 'defaults'])
def test_voc_config_reads_the_released_tokens(built_from):
    """The VOC preset, and SeeDiff's defaults (the tools' ``--method seediff`` without a
    preset), read per class the prompt tokens the released aggregation reads: the first
    sub-token; pottedplant pot + plant, tvmonitor tv + the end token, diningtable 'ing'."""
    from transformers import CLIPTokenizer
    tokenizer = CLIPTokenizer.from_pretrained(shared_path('sd_configs', 'stable-diffusion-v1-4',
                                                          'tokenizer'))
    cfg = Config.fromfile(str(REPO / 'configs' / 'seediff' / 'seediff_voc20_synth.py'))
    generator = MASK_GENERATORS.build(cfg.generator if built_from == 'preset' else
                                      dict(type='SeeDiff', classes=cfg.classes))
    expected = dict(pottedplant=['pot', 'plant</w>'], tvmonitor=['tv', '<|endoftext|>'],
                    diningtable=['ing'], aeroplane=['aerop'], dog=['dog</w>'])
    corrected = SeeDiff(VOC, token_offsets=dict(tvmonitor=[0, 1])).token_offsets
    assert corrected == {'pottedplant': [0, 2], 'tvmonitor': [0, 1], 'cell phone': [0, 2],
                         'parking meter': [0, 2], 'diningtable': [1]}  # per name
    _assert_tokens_read(tokenizer, generator, expected)


def test_coco_names_read_the_released_tokens():
    """The release's rule for COCO's 'cell phone' and 'parking meter' (the one tvmonitor has):
    the first token and the end token two after it; ``token_offsets`` gives the intended words."""
    from transformers import CLIPTokenizer
    tokenizer = CLIPTokenizer.from_pretrained(shared_path('sd_configs', 'stable-diffusion-v1-4',
                                                          'tokenizer'))
    classes = ['background', 'cell phone', 'parking meter', 'dog']
    _assert_tokens_read(tokenizer, SeeDiff(classes), {
        'cell phone': ['cell</w>', '<|endoftext|>'],
        'parking meter': ['parking</w>', '<|endoftext|>'], 'dog': ['dog</w>']})
    intended = {'cell phone': [0, 1], 'parking meter': [0, 1]}
    _assert_tokens_read(tokenizer, SeeDiff(classes, token_offsets=intended), {
        'cell phone': ['cell</w>', 'phone</w>'], 'parking meter': ['parking</w>', 'meter</w>']})
    # the label-cache / manifest key: the VOC rules as recorded before the COCO ones were added
    # (a folder made earlier resumes), the COCO ones only where those classes are labelled
    voc_rules = {'pottedplant': [0, 2], 'tvmonitor': [0, 2], 'diningtable': [1]}
    assert SeeDiff(VOC).config_dict()['token_offsets'] == voc_rules
    assert SeeDiff(['road', 'car']).config_dict()['token_offsets'] == voc_rules
    assert SeeDiff(classes).config_dict()['token_offsets'] == {
        **voc_rules, 'cell phone': [0, 2], 'parking meter': [0, 2]}
    assert SeeDiff(classes, token_offsets=intended).config_dict()['token_offsets'] == {
        **voc_rules, **intended}


def _assert_tokens_read(tokenizer, generator, expected):
    """Each class of ``expected`` reads exactly its listed prompt tokens (through maps in which
    token t lights pixel t only)."""
    from mmdiffseg.attention.prompts import token_positions
    for name, words in expected.items():
        prompt = generator.generate_kwargs([name])['prompts'][0]
        ids = tokenizer(prompt, padding='max_length', max_length=77).input_ids
        cross = torch.zeros(1, 1, 256, 77)
        cross[0, 0, torch.arange(77), torch.arange(77)] = 1  # token t lights pixel t only
        maps = AttentionMaps({CROSS_NAME: cross}, [prompt],
                             [token_positions(tokenizer, prompt, [name])])
        read = torch.nonzero(generator.class_cross_attention(maps, [[name]])[0, 0]).flatten()
        assert tokenizer.convert_ids_to_tokens([ids[t] for t in read]) == words, name
