"""benchmarks/difference_fetch.py: each image's row is labelled with what the named region shows in it."""

from __future__ import annotations

import torch
from benchmark_script import load_benchmark

from synthetic.world.mini_demon import mini_demon_instance
from synthetic.world.scene import COLOURS


def test_rows_are_images_labelled_by_the_named_regions_content_with_the_questions_guidance():
    bench = load_benchmark("difference_fetch")
    model, prompts, processor = bench.base_model()  # the default job's base model: the tiny world
    n = 6
    q = bench.collect(model, prompts, processor, seed=0, n=n)
    layers = model.llm.config.num_hidden_layers
    assert q.guidance.shape == (2 * n, layers, model.llm.config.hidden_size)
    assert q.vision.shape[:2] == (2 * n, 1)
    for i in range(n):
        inst = mini_demon_instance("difference", i, 0)
        a, b = 2 * i, 2 * i + 1
        torch.testing.assert_close(q.guidance[a], q.guidance[b])  # one prompt per question
        assert not torch.equal(q.vision[a], q.vision[b])  # each row its own image
        assert int(q.cell[a]) == int(q.oracle[a].argmax()) == inst.named.cell
        assert q.edit[a] == inst.subsets[0]
        for row, shown in zip((a, b), inst.focus, strict=True):
            expected = 1 + list(COLOURS).index(shown[0].colour) if shown else 0
            assert int(q.label[row]) == expected
            assert bench.REGION_CLASSES[expected] == (shown[0].colour if shown else "empty")
    edits = set(q.edit)
    if "add" in edits:  # an added object: the first image's region is empty, the second's is not
        row = q.edit.index("add")  # its first image's row
        assert int(q.label[row]) == 0 and int(q.label[row + 1]) > 0
    probe = bench.region_probe(q, q)
    assert set(probe) == {"majority", *map(str, range(layers))}
