"""SFT and DPO batches grouped by length ([train] length_groups): each epoch still reads every train
example once, batches hold examples of about one length, resume continues the same batches, and
without the key the batches are the plain random ones of every earlier run."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyphi3.train.conversations import ExampleBatches, pad_batch
from tinyphi3.train.recipe import RecipeError, load_recipe


def _examples(lengths):
    return [(np.arange(n), np.arange(n)) for n in lengths]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=40, max_size=400), st.integers(1, 16),
       st.integers(1, 8), st.integers(0, 2**16))
def test_an_epoch_reads_every_example_once(lengths, batch_size, groups, seed):
    batches = ExampleBatches(_examples(lengths), batch_size, seed, 8, groups, lengths)
    n_train, bs = len(batches.train), batches.batch_size
    seen = []
    for _ in range(n_train // bs):
        chosen = batches.next_examples()
        assert len(chosen) == bs
        seen += [id(x) for x in chosen]
    assert batches.epoch == 0
    assert len(set(seen)) == len(seen) == n_train // bs * bs     # no example twice in an epoch
    assert set(seen) <= {id(x) for x in batches.train}           # and never a held-out one
    batches.next_examples()
    assert batches.epoch == 1                                    # the tail fills no batch


def test_grouped_batches_pad_less_than_plain_ones():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(20, 320, 4000))
    examples = _examples(lengths)

    def padded_tokens(groups):
        batches = ExampleBatches(examples, 16, 3, 256, groups, lengths)
        return sum(pad_batch(batches.next_examples(), 0)[0].size for _ in range(200))

    plain, grouped = padded_tokens(0), padded_tokens(16)
    assert grouped < 0.7 * plain


def test_grouped_batches_are_still_mixed_across_the_data():
    """Batches come from groups of G random batches: consecutive batches are not sorted by length
    and one batch holds examples from all over the file."""
    lengths = list(np.random.default_rng(1).integers(10, 300, 2000))
    examples = _examples(lengths)
    batches = ExampleBatches(examples, 8, 0, 100, 16, lengths)
    index = {id(x): i for i, x in enumerate(examples)}
    maxima, spans = [], []
    for _ in range(100):
        chosen = [index[id(x)] for x in batches.next_examples()]
        maxima.append(max(lengths[i] for i in chosen))
        spans.append(max(chosen) - min(chosen))
    assert np.mean(spans) > 500                                  # not neighbours in the file
    assert 0.3 < np.mean(np.diff(maxima) > 0) < 0.7              # no trend from batch to batch


def test_resume_continues_the_same_grouped_batches():
    lengths = list(np.random.default_rng(2).integers(5, 200, 500))
    examples = _examples(lengths)
    first = ExampleBatches(examples, 8, 7, 50, 4, lengths)
    for _ in range(70):                                          # into the second epoch
        first.next_examples()
    second = ExampleBatches(examples, 8, 7, 50, 4, lengths)
    second.load_state_dict(first.state_dict())
    for _ in range(80):
        assert [id(x) for x in first.next_examples()] == [id(x) for x in second.next_examples()]


def test_without_groups_the_order_is_the_plain_permutation():
    examples = _examples([5] * 300)
    batches = ExampleBatches(examples, 10, 4, 60)
    expected = np.random.default_rng([4, 0]).permutation(240)[:10]
    assert [id(x) for x in batches.next_examples()] == [id(examples[i]) for i in expected]


def test_groups_need_the_lengths():
    with pytest.raises(ValueError, match="length"):
        ExampleBatches(_examples([3] * 50), 4, 0, 10, 4)


def _recipe(tmp_path, stage, extra):
    data = {"sft": 'conversations = "c.jsonl"', "dpo": 'preferences = "p.jsonl"',
            "pretrain": 'shards = "s"'}[stage]
    path = tmp_path / "r.toml"
    path.write_text(f'[model]\ntokenizer = "t"\ninit_from = "i"\n[data]\n{data}\n'
                    f'[train]\nstage = "{stage}"\n{extra}\n')
    return path


def test_recipe_takes_length_groups_for_sft_and_dpo_only(tmp_path):
    assert load_recipe(_recipe(tmp_path, "sft", "length_groups = 16")).train.length_groups == 16
    assert load_recipe(_recipe(tmp_path, "sft", "")).train.length_groups == 0
    with pytest.raises(RecipeError, match="length_groups"):
        load_recipe(_recipe(tmp_path, "sft", "length_groups = -1"))
    assert load_recipe(_recipe(tmp_path, "dpo", "length_groups = 4")).train.length_groups == 4
    with pytest.raises(RecipeError, match="length_groups"):
        load_recipe(_recipe(tmp_path, "pretrain", "length_groups = 4"))
