"""The generators' batched post-processing (few host syncs on a GPU) against the image-by-image
formulation it replaces: the same bits, and sync counts that do not grow with the batch."""
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mmdiffseg.generators import DiffSeg, ISeg
from mmdiffseg.generators.class_names import VOC_CLASSES, prompt_names
from mmdiffseg.generators.diffseg import compact_ids
from mmdiffseg.generators.diffseg_merge import greedy_leaders
from mmdiffseg.generators.kmeans import kmeans, kmeans_batch
from mmdiffseg.generators.ordered_sums import column_split, cpu_order_cluster_sums
from mmdiffseg.generators.testing import attention_from_labels

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'benchmarks'))
from op_counts import count_ops  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ATen's CPU sum order with one thread (see ordered_sums)
    yield
    torch.set_num_threads(threads)


def test_an_image_of_2_to_the_16_rows_is_summed_in_cpu_order_and_one_more_is_refused():
    """The row limit ``MAX_ROWS = 2 ** 16`` per image: the largest image allowed still gives the
    CPU's bits, one row more is refused with the reason."""
    gen = torch.Generator().manual_seed(0)
    n = 2 ** 16
    x = torch.rand(1, n, 3, generator=gen) * torch.rand(1, n, 1, generator=gen) ** 4
    clusters = (torch.rand(1, n, generator=gen) < 0.1).long()  # cluster 0: ~90% of the rows
    sums = cpu_order_cluster_sums(x, clusters, 2, backend='torch')
    for c in range(2):
        assert torch.equal(sums[0, c], x[0][clusters[0] == c].sum(0)), c
    with pytest.raises(ValueError, match=r'65537 rows per image.*up to 65536'):
        cpu_order_cluster_sums(torch.rand(1, n + 1, 3), torch.zeros(1, n + 1, dtype=torch.long),
                               2, backend='torch')


def sequential_leaders(close: torch.Tensor) -> torch.Tensor:
    """The released greedy merge's loop: a proposal not yet merged leads, and marks its group."""
    merged = torch.zeros(len(close), dtype=torch.bool)
    leaders = torch.zeros(len(close), dtype=torch.bool)
    for i in range(len(close)):
        if not merged[i]:
            leaders[i] = True
            merged |= close[i]
            merged[i] = True
    return leaders


def test_greedy_leaders_equal_the_released_loop_for_every_image_of_a_batch():
    gen = torch.Generator().manual_seed(0)
    for trial in range(30):
        largest = 40 if trial < 20 else 5  # up to ROUNDS proposals: no convergence check
        sizes = [int(s) for s in torch.randint(0, largest, (4,), generator=gen)]
        density = float(torch.rand((), generator=gen)) * 0.3
        close = []
        for n in sizes:
            c = torch.rand(n, n, generator=gen) < density
            close.append((c | c.T).fill_diagonal_(True))  # symmetric, as a KL threshold makes it
        leaders, counts = greedy_leaders(close)
        for c, lead, count in zip(close, leaders, counts):
            expected = sequential_leaders(c)
            assert torch.equal(lead, expected.nonzero().flatten()), trial
            assert count == int(expected.sum())


@pytest.mark.parametrize('threads', [1, 2, 16])
def test_cluster_sums_in_cpu_order_equal_the_per_cluster_sums_bit_for_bit(threads):
    """Sums on 1, 2 and 16 CPU threads (ATen splits the columns of a large cluster between
    threads); 100 and 68 columns: with 16 threads the last 4 go to a part of their own."""
    gen = torch.Generator().manual_seed(1)
    cases = [(4096, 77, 36), (1024, 64, 9), (700, 100, 3), (1100, 68, 2), (37, 8, 4), (4096, 8, 2),
             (9000, 5, 2)]
    for n, d, k in cases:
        x = torch.rand(2, n, d, generator=gen) * torch.rand(2, n, 1, generator=gen) ** 4
        labels = torch.randint(0, k - 1, (2, n), generator=gen)  # cluster k-1 left empty
        labels[1, : n // 2] = 0  # one cluster of half the pixels (ATen's many-block path)
        torch.set_num_threads(threads)
        expected = [[x[b][labels[b] == c].sum(0) for c in range(k)] for b in range(2)]
        torch.set_num_threads(1)
        sums = cpu_order_cluster_sums(x, labels, k, threads=threads)
        for b in range(2):
            for c in range(k):
                assert torch.equal(sums[b, c], expected[b][c]), (n, d, k, b, c)
    with pytest.raises(ValueError, match='1 columns'):
        cpu_order_cluster_sums(torch.rand(1, 10, 1), torch.zeros(1, 10, dtype=torch.long), 2)


def test_cluster_sums_take_the_thread_count_torch_runs_with_by_default():
    """Without ``threads``: torch's own thread count (68 columns: 16 threads split off the last
    4, one does not)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1100, 68, generator=gen) * torch.rand(1, 1100, 1, generator=gen) ** 4
    labels = torch.zeros(1, 1100, dtype=torch.long)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(16)
        default = cpu_order_cluster_sums(x, labels, 2)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(default, cpu_order_cluster_sums(x, labels, 2, threads=16))
    assert not torch.equal(default, cpu_order_cluster_sums(x, labels, 2, threads=1))


def test_cluster_sums_past_one_run_of_16_cubed_rows_keep_the_cpu_order():
    """A cluster of more than 16 ** 3 rows: ATen's third accumulator level (runs of 16 groups of
    16 blocks) shapes the bits (a cascade of two levels differs here)."""
    gen = torch.Generator().manual_seed(3)
    n = 3 * 16 ** 3 + 100
    x = torch.rand(1, n, 70, generator=gen) * torch.rand(1, n, 1, generator=gen) ** 4 * 1e3
    labels = (torch.rand(1, n, generator=gen) < 0.02).long()   # cluster 0: ~98% of the rows
    sums = cpu_order_cluster_sums(x, labels, 2)
    for c in range(2):
        assert torch.equal(sums[0, c], x[0][labels[0] == c].sum(0)), c


@pytest.mark.parametrize('d, threads, split', [
    (77, 16, (64, 64)),   # iSeg's: 13 trailing columns (>= one vector) go to row_sum either way
    (100, 1, (96, 96)),   # three groups of 32 columns, 4 left over
    (100, 2, (96, 96)),   # threads start at columns 0 and 50 -> parts [0, 32) and [32, 100)
    (100, 16, (96, 100)),  # 7 columns each: the thread at 98 starts a part [96, 100)
    (100, 24, (96, 96)),  # 5 columns each: 95 rounds to 64, 100 is past the end
    (68, 16, (64, 68)),   # 5 each: 65 rounds to 64
    (103, 16, (96, 100)),  # 7 trailing columns: the first 4 in the scalar loop's group
    (6, 1, (4, 4)),       # fewer than a vector: the scalar loop
])
def test_the_column_split_follows_atens_groups_and_thread_parts(d, threads, split):
    assert column_split(d, threads) == split


def test_kmeans_of_a_batch_equals_kmeans_of_each_set_and_relocates_an_empty_cluster():
    gen = torch.Generator().manual_seed(2)
    points = [torch.randn(n, 6, generator=gen) + 4 * torch.randint(0, 3, (n, 1), generator=gen)
              for n in (300, 50, 120)]
    inits = [p[:k].clone() for p, k in zip(points, (5, 3, 4))]
    inits[1][2] = 1e3  # far from every point: empty after the first assignment
    centers, labels = kmeans_batch(points, inits, check_every=3)
    for p, init, c, lab in zip(points, inits, centers, labels):
        c1, lab1 = kmeans(p, init)
        assert torch.equal(c, c1) and torch.equal(lab, lab1)
    # sklearn's relocation: the empty cluster takes the point farthest from its own centre, so
    # every cluster ends with points and its centre is their mean
    assert torch.bincount(labels[1], minlength=3).min() > 0
    for k in range(3):
        assert torch.allclose(centers[1][k], points[1][labels[1] == k].mean(0), atol=1e-5)


@pytest.mark.parametrize('precision', ['float16', 'float32'])
def test_diffseg_first_pass_in_groups_equals_each_image_alone(shared_data, precision):
    # 11 images: a group of FIRST_PASS_IMAGES and a partial one; then every other image (a
    # gather instead of a view), as labelled mode skips images without a named class
    from mmdiffseg.generators.diffseg import FIRST_PASS_IMAGES
    maps, _ = voc_maps(10, VOC_CLASSES, self_resolutions=(32, 16, 8), cross_resolutions=())
    maps = batch_of_maps([maps, one_image(maps, 3)])
    assert maps.batch_size > FIRST_PASS_IMAGES
    generator = DiffSeg(resolutions=(32, 16, 8), merge_precision=precision)
    for samples in (range(maps.batch_size), range(1, maps.batch_size, 2)):
        proposals, _ = generator.proposals(maps, samples)
        for b, batched in zip(samples, proposals):
            alone, _ = generator.proposals(one_image(maps, b), [0])
            assert torch.equal(batched, alone[0]), (list(samples), b)


def batch_of_maps(parts):
    return replace(parts[0], maps={k: torch.cat([p[k] for p in parts]) for k in parts[0].maps},
                   prompts=[t for p in parts for t in p.prompts],
                   token_positions=[t for p in parts for t in p.token_positions])


def test_compact_ids_number_each_images_used_ids_in_order():
    ids = torch.tensor([[[7, 3], [3, 11]], [[9, 0], [7, 7]], [[5, 5], [5, 5]]])
    compacted = compact_ids(ids, 12)
    for image, ours in zip(ids, compacted):
        assert torch.equal(ours, torch.unique(image, return_inverse=True)[1])


def voc_maps(batch, words, **kwargs):
    from mmdiffseg.generators.testing import load_label_png
    from sample_data import shared_path
    paths = sorted(shared_path('voc2012_val_samples', 'SegmentationClass').glob('*.png'))
    labels = torch.stack([load_label_png(paths[i], size=256) for i in range(batch)])
    return attention_from_labels(labels, words, noise=0.15, **kwargs)


def one_image(maps, b):
    return replace(maps, maps={k: v[b:b + 1] for k, v in maps.maps.items()},
                   prompts=maps.prompts[b:b + 1], token_positions=maps.token_positions[b:b + 1])


def iseg_maps(batch):
    words = prompt_names(VOC_CLASSES, 'voc')
    maps, names = voc_maps(batch, words, self_resolutions=(64,), cross_resolutions=(32, 16))
    for key in ('self64', 'cross16', 'cross32'):
        maps.maps[f'iseg_{key}'] = maps.maps.pop(key)
    return maps, [[VOC_CLASSES[words.index(w)] for w in ws] for ws in names]


@pytest.mark.parametrize('make,labelled', [
    (lambda: DiffSeg(refine=True), False),
    (lambda: DiffSeg(classes=VOC_CLASSES, merge_precision='float32'), True),
    (lambda: ISeg.from_preset('wsss_voc'), True)],
    ids=['diffseg-refine', 'diffseg-labelled', 'iseg'])
def test_a_batch_gives_each_image_its_own_labels_with_syncs_that_do_not_grow(shared_data, make,
                                                                            labelled):
    generator = make()
    build = iseg_maps if isinstance(generator, ISeg) else lambda n: voc_maps(n, VOC_CLASSES)
    maps, names = build(3)
    if not labelled:
        names = None
    batch, counts = count_ops(generator, maps, None, names)
    alone = []
    for b in range(3):
        label, single = count_ops(generator, one_image(maps, b), None,
                                  None if names is None else names[b:b + 1])
        assert torch.equal(batch[b], label[0]), b
        alone.append(single)
    # the host waits once per pass or check for the whole batch: as often as for the image that
    # needs the most (k-means iterations, merge rounds), not once per image (iSeg: once in all)
    assert counts.syncs_total <= max(single.syncs_total for single in alone), \
        (counts.describe(), [single.describe() for single in alone])
    for reason in ('boolean mask', 'nonzero', 'unique', 'bincount'):
        assert reason not in counts.syncs, counts.describe()
