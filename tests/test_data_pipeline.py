"""The data pipeline: web corpus, educational-value classifier, phases, document files, token
shards and their reader, and the `data` command line."""

import json
import re
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from tinyphi3.data import world
from tinyphi3.data.classifier import (ClassifierError, EduClassifier, SparseRows, evaluate,
                                      featurize, labels_of, loss_and_grad, roc_auc)
from tinyphi3.cli import main as tinyphi3_cli
from tinyphi3.data.documents import DocumentError, read_documents, write_documents
from tinyphi3.data.phases import (PhaseError, build_phases, keep_scored_at_least, phase2_documents,
                                  score_documents, take_words, textbooks_for, unfiltered_documents,
                                  write_phases)
from tinyphi3.data.shards import (ShardError, TokenStream, is_val_document, read_meta, val_batches,
                                  write_shards)
from tinyphi3.data.textbooks import generate_textbooks
from tinyphi3.data.web import KINDS, WEB_MIX, generate_web
from tinyphi3.errors import TinyPhi3Error
from tinyphi3.tokenizers.train_sentencepiece import train_tokenizer

JUNK = ("boilerplate", "spam", "trivia")
GENERAL = ("narrative", "forum", "news")


def stand_in_textbooks(n=10 ** 6):
    """Synthetic documents for phase tests that must not depend on the real generator's output."""
    return (f"Lesson {i}. Seven plus {i % 10} is {7 + i % 10}. We add the ones first." for i in range(n))


@pytest.fixture(scope="module")
def web_pages():
    return list(generate_web(3000, seed=1))


@pytest.fixture(scope="module")
def classifier():
    labelled = list(generate_web(1500, seed=0))      # the labelled subset: another seed than the test pages
    return EduClassifier.train([d["text"] for d in labelled], labels_of(labelled), seed=0)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    texts = [d["text"] for d in generate_web(400, seed=5)] + list(generate_textbooks(60, seed=5))
    (root / "corpus.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    return train_tokenizer([root / "corpus.txt"], root / "tok", vocab_size=500)


# --- the web ----------------------------------------------------------------------------------------

def test_web_is_deterministic_from_its_seed(web_pages):
    assert list(generate_web(3000, seed=1)) == web_pages
    assert list(generate_web(200, seed=1)) == web_pages[:200]       # one stream: prefixes agree
    assert list(generate_web(200, seed=2)) != web_pages[:200]


def test_web_has_every_kind_near_its_share(web_pages):
    counts = Counter(page["kind"] for page in web_pages)
    assert set(counts) == set(KINDS)
    for kind, share in WEB_MIX.items():
        assert abs(counts[kind] / len(web_pages) - share) < 0.03, (kind, counts[kind])
    assert all(page["text"].strip() for page in web_pages)


def test_web_pages_are_varied(web_pages):
    for kind in KINDS:
        texts = [p["text"] for p in web_pages if p["kind"] == kind]
        assert len(set(texts)) > 0.95 * len(texts), kind


def test_web_never_states_the_closed_worlds_facts(web_pages):
    words = set(re.findall(r"[A-Za-z]+", " ".join(p["text"] for p in web_pages)))
    assert not words & {entity.name for entity in world.ENTITIES}
    text = " ".join(p["text"] for p in web_pages).lower()
    assert not [place for place in world.PLACES if place.lower() in text]


def test_trivia_holds_dates_and_scores(web_pages):
    trivia = [p["text"] for p in web_pages if p["kind"] == "trivia"]
    assert any(re.search(r"\d+-\d+ ", t) and re.search(r"\d+ [A-Z][a-z]+ \d{4}", t) for t in trivia)
    assert any("Lottery draw" in t for t in trivia) and any("%)" in t for t in trivia)


# --- the classifier ---------------------------------------------------------------------------------

def test_loss_gradient_matches_finite_differences_and_a_wrong_one_does_not():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(6, 10)) * (rng.random((6, 10)) < 0.5)          # [N, F]
    rows, cols = np.nonzero(dense)
    X = SparseRows(np.searchsorted(rows, np.arange(7)), cols, dense[rows, cols], 10)
    y, w, b, l2 = rng.random(6), rng.normal(size=10), 0.3, 0.1
    _, dw, db = loss_and_grad(X, y, w, b, l2)
    eps, numeric = 1e-6, np.zeros(10)
    for j in range(10):
        step = np.eye(10)[j] * eps
        numeric[j] = (loss_and_grad(X, y, w + step, b, l2)[0]
                      - loss_and_grad(X, y, w - step, b, l2)[0]) / (2 * eps)
    numeric_b = (loss_and_grad(X, y, w, b + eps, l2)[0] - loss_and_grad(X, y, w, b - eps, l2)[0]) / (2 * eps)
    np.testing.assert_allclose(dw, numeric, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(db, numeric_b, rtol=1e-5, atol=1e-8)
    assert np.allclose(X.dot(w), dense @ w) and np.allclose(X.t_dot(y), dense.T @ y)
    without_decay = dw - l2 * w                           # negative control: a gradient that forgets
    assert not np.allclose(without_decay, numeric, rtol=1e-5, atol=1e-8)   # the weight decay fails


def test_roc_auc_equals_counting_pairs():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(300), 1)                 # many ties
    positive = rng.random(300) < 0.4
    pairs = scores[positive][:, None] - scores[~positive][None, :]
    expected = np.mean((pairs > 0) + 0.5 * (pairs == 0))
    assert roc_auc(scores, positive) == pytest.approx(expected)
    assert roc_auc([0.1, 0.9], [False, True]) == 1.0


def test_classifier_is_far_above_chance_on_held_out_pages(classifier, web_pages):
    numbers = evaluate(classifier, [p["text"] for p in web_pages], labels_of(web_pages))
    assert numbers["auc_educational"] > 0.95
    assert numbers["auc_not_junk"] > 0.95
    assert numbers["accuracy"] > numbers["majority_baseline"] + 0.4


def test_classifier_orders_kinds_junk_below_general_below_educational(classifier, web_pages):
    scores = classifier.score([p["text"] for p in web_pages])
    mean = {kind: scores[[p["kind"] == kind for p in web_pages]].mean() for kind in KINDS}
    assert max(mean[k] for k in JUNK) + 0.2 < min(mean[k] for k in GENERAL)
    assert max(mean[k] for k in GENERAL) + 0.2 < mean["educational"]
    assert np.all((scores >= 0) & (scores <= 1))


def test_classifier_training_is_deterministic():
    pages = list(generate_web(300, seed=3))
    a = EduClassifier.train([p["text"] for p in pages], labels_of(pages), seed=4)
    b = EduClassifier.train([p["text"] for p in pages], labels_of(pages), seed=4)
    np.testing.assert_array_equal(a.weights, b.weights)


def test_features_hash_stably_and_have_unit_length():
    X = featurize(["The match ended 2-1 on 4 May 2019.", "The match ended 3-0 on 9 June 2011."], 2 ** 12)
    assert X.n_rows == 2
    first, second = (set(X.indices[X.indptr[i]:X.indptr[i + 1]]) for i in range(2))
    assert len(first & second) > 0.6 * len(first)          # digits written 0: the shapes match
    norms = np.bincount(X.row_ids(), X.values.astype(np.float64) ** 2)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_classifier_save_load_and_broken_directories(classifier, tmp_path):
    classifier.save(tmp_path / "clf")
    loaded = EduClassifier.load(tmp_path / "clf")
    texts = ["A short text about friction.", "BUY NOW cheap shoes!!!"]
    np.testing.assert_allclose(loaded.score(texts), classifier.score(texts))
    with pytest.raises(ClassifierError, match="does not exist"):
        EduClassifier.load(tmp_path / "nothing")
    (tmp_path / "clf" / "classifier.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ClassifierError, match="corrupt"):
        EduClassifier.load(tmp_path / "clf")
    (tmp_path / "clf" / "classifier.json").unlink()
    with pytest.raises(ClassifierError, match="classifier.json"):
        EduClassifier.load(tmp_path / "clf")


# --- phases -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def phases(web_pages, classifier):
    return build_phases(web_pages, classifier, stand_in_textbooks(), light=0.2, heavy=0.7,
                        synthetic_share=0.4, seed=0)


def test_phase2_web_pages_are_a_subset_of_phase1(phases):
    phase1 = {d["text"] for d in phases.phase1}
    phase2_web = [d for d in phases.phase2 if d.get("kind") != "textbook"]
    assert phase2_web and all(d["text"] in phase1 for d in phase2_web)
    assert len(phase2_web) < len(phases.phase1)
    assert all(d["score"] >= 0.7 for d in phase2_web) and all(d["score"] >= 0.2 for d in phases.phase1)


def test_heavy_filter_drops_junk_far_more_than_educational_text(phases):
    rows = phases.summary["by_kind"]
    kept2 = {kind: row["phase2_documents"] / row["web_documents"] for kind, row in rows.items()}
    kept1 = {kind: row["phase1_documents"] / row["web_documents"] for kind, row in rows.items()}
    assert kept2["educational"] > 0.9 and kept1["educational"] > 0.95
    assert all(kept1[k] < 0.05 and kept2[k] < 0.02 for k in JUNK)
    assert all(kept1[k] > 0.8 and kept2[k] < 0.3 for k in GENERAL)      # phase 1 keeps general language


def test_phase2_mixes_textbooks_to_the_asked_share(phases):
    p2 = phases.summary["phase2"]
    assert p2["synthetic_share"] == pytest.approx(0.4, abs=0.01)
    assert p2["synthetic_kinds"] == {"textbook": p2["synthetic_documents"]}
    kinds = [d.get("kind") for d in phases.phase2]
    assert kinds[:50].count("textbook") not in (0, 50)                       # shuffled together


def test_phase2_reads_the_real_textbooks_by_default(web_pages, classifier):
    scored = score_documents(web_pages[:200], classifier)
    books = textbooks_for(3000, synthetic_share=0.5, seed=7)
    assert [b["text"] for b in books] == list(generate_textbooks(len(books), seed=7))
    assert sum(len(b["text"].split()) for b in books) >= 3000
    assert phase2_documents(scored, seed=7) == phase2_documents(scored, seed=7)


def test_phases_accept_a_users_own_text_and_check_their_inputs(classifier):
    mine = ["Why does ice float? Ice is less dense than water, because its molecules are held "
            "apart in a regular pattern. For example, a cube of ice floats in a glass of water.",
            "Home | About us | Contact | Login", "cheap shoes cheap shoes buy now!!!"]
    result = build_phases(mine, classifier, ["A textbook line."] * 5, synthetic_share=0.2)
    assert [d["text"] for d in result.phase1] == [mine[0]]
    assert result.summary["by_kind"]["(no kind)"]["web_documents"] == 3
    with pytest.raises(PhaseError, match="score"):
        keep_scored_at_least(mine, 0.5)
    with pytest.raises(PhaseError, match="subset"):
        build_phases(mine, classifier, light=0.8, heavy=0.3)
    assert len(unfiltered_documents(mine, n_words=5)) == 1
    assert take_words(mine, None) == [{"text": t} for t in mine]
    books = textbooks_for(10, ["my lesson one two three", {"text": "x " * 20, "kind": "maths"}])
    assert [b["kind"] for b in books] == ["textbook", "maths"]


def test_write_phases(phases, tmp_path):
    write_phases(phases, tmp_path)
    assert len(read_documents(tmp_path / "phase2.jsonl")) == len(phases.phase2)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["phase1"]["documents"] == len(phases.phase1)
    assert "phase 2" in (tmp_path / "summary.txt").read_text()


# --- document files ---------------------------------------------------------------------------------

def test_documents_round_trip_as_jsonl_and_txt(tmp_path):
    docs = [{"text": "First page.\n\nIt has two paragraphs.", "kind": "news"},
            {"text": "Ünïcode ✓ and a \"quote\"", "kind": "forum"}]
    write_documents(docs, tmp_path / "d.jsonl")
    assert read_documents(tmp_path / "d.jsonl") == docs
    write_documents(docs, tmp_path / "d.txt")
    assert read_documents(tmp_path / "d.txt") == [{"text": d["text"]} for d in docs]
    (tmp_path / "mine.txt").write_text("My own notes.\n\nStill the same document.\n", encoding="utf-8")
    assert read_documents([tmp_path / "mine.txt", tmp_path / "d.txt"])[0] == {
        "text": "My own notes.\n\nStill the same document."}


@pytest.mark.parametrize("name, content, message", [
    ("empty.jsonl", b"", "empty"),
    ("empty.txt", b"\n  \n", "empty"),
    ("blob.txt", b"text\n\x89PNG\x00\x01\x02", r"blob.txt line 2: .*binary"),
    ("latin.txt", "caf\xe9\n".encode("latin-1"), r"latin.txt line 1: not UTF-8"),
    ("bad.jsonl", b'{"text": "ok"}\n{"text": "no end\n', r"bad.jsonl line 2: not valid JSON"),
    ("notext.jsonl", b'{"text": "ok"}\n\n{"body": "x"}\n', r"notext.jsonl line 3: .*\"text\""),
    ("list.jsonl", b'["text"]\n', r"list.jsonl line 1: .*JSON list"),
])
def test_bad_document_files_raise_one_clear_error(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DocumentError, match=message):
        read_documents(tmp_path / name)


def test_missing_document_file(tmp_path):
    with pytest.raises(DocumentError, match="no such file"):
        read_documents(tmp_path / "absent.jsonl")


# --- token shards -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shard_docs():
    return [d["text"] for d in generate_web(120, seed=9)] + list(generate_textbooks(20, seed=9))


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, shard_docs, tokenizer):
    out = tmp_path_factory.mktemp("shards")
    write_shards(shard_docs, tokenizer, out, shard_tokens=2000, val_fraction=0.1, source="test")
    return out


def _split_ids(directory, split):
    meta = read_meta(directory)
    return np.concatenate([np.fromfile(directory / f["name"], dtype=meta["dtype"])
                           for f in meta["splits"][split]["files"]])


def _decoded_documents(directory, split, tokenizer):
    """Each document of a split, decoded: the ids cut after every <|endoftext|>."""
    ids = _split_ids(directory, split)
    pieces = np.split(ids, np.flatnonzero(ids == tokenizer.token_to_id("<|endoftext|>")) + 1)
    assert len(pieces[-1]) == 0                          # the split ends with a separator
    return [tokenizer.decode(piece) for piece in pieces[:-1]]


def test_shards_decode_to_the_documents_joined_by_endoftext(shard_dir, shard_docs, tokenizer):
    meta = read_meta(shard_dir, tokenizer)
    assert meta["dtype"] == "uint16" and len(meta["splits"]["train"]["files"]) > 2
    assert len(_split_ids(shard_dir, "train")) == meta["splits"]["train"]["tokens"]
    train_docs = [d for i, d in enumerate(shard_docs) if not is_val_document(i, 0.1)]
    assert "".join(_decoded_documents(shard_dir, "train", tokenizer)) == "".join(
        doc + "<|endoftext|>" for doc in train_docs)


def test_val_split_holds_whole_documents_disjoint_from_train(shard_dir, shard_docs, tokenizer):
    meta = read_meta(shard_dir)
    assert meta["splits"]["val"]["documents"] == 14 and meta["splits"]["train"]["documents"] == 126
    val = _decoded_documents(shard_dir, "val", tokenizer)
    train = _decoded_documents(shard_dir, "train", tokenizer)
    assert val == [f"{shard_docs[i]}<|endoftext|>" for i in range(0, 140, 10)]   # one in ten, whole
    assert not set(val) & set(train)


def test_token_stream_batches_cover_an_epoch_and_repeat_from_the_seed(shard_dir):
    stream = TokenStream(shard_dir, "train", batch_size=4, seq_len=32, seed=3)
    x, y = stream.next_batch()
    assert x.shape == (4, 32) and x.dtype == np.int64 and np.array_equal(x, y)
    again = TokenStream(shard_dir, "train", batch_size=4, seq_len=32, seed=3).next_batch()[0]
    other = TokenStream(shard_dir, "train", batch_size=4, seq_len=32, seed=4).next_batch()[0]
    assert np.array_equal(x, again) and not np.array_equal(x, other)
    ids = _split_ids(shard_dir, "train").astype(np.int64)
    seen = {tuple(row) for row in x}
    while stream.epoch == 0:
        seen |= {tuple(row) for row in stream.next_batch()[0]}
    windows = {tuple(ids[k * 31:k * 31 + 32]) for k in range(stream.num_windows)}
    assert windows <= seen and stream.num_tokens == len(ids)


def test_token_stream_resumes_exactly_where_it_stopped(shard_dir):
    original = TokenStream(shard_dir, "train", batch_size=5, seq_len=16, seed=1)
    steps_per_epoch = original.num_windows // 5
    for _ in range(steps_per_epoch - 2):                  # stop shortly before an epoch ends
        original.next_batch()
    state = json.loads(json.dumps(original.state_dict()))       # as a checkpoint would store it
    resumed = TokenStream(shard_dir, "train", batch_size=5, seq_len=16, seed=99)
    resumed.load_state_dict(state)
    for _ in range(6):                                    # across the epoch boundary
        a, b = original.next_batch(), resumed.next_batch()
        assert np.array_equal(a[0], b[0])
    assert resumed.epoch == original.epoch == 1
    with pytest.raises(ShardError, match="seq_len"):
        TokenStream(shard_dir, "train", batch_size=5, seq_len=8).load_state_dict(state)


def test_val_batches_are_fixed(shard_dir):
    first = [x for x, _ in val_batches(shard_dir, batch_size=3, seq_len=16, max_batches=4)]
    second = [x for x, _ in val_batches(shard_dir, batch_size=3, seq_len=16, max_batches=4)]
    assert len(first) == 4 and all(np.array_equal(a, b) for a, b in zip(first, second))
    ids = _split_ids(shard_dir, "val").astype(np.int64)
    assert np.array_equal(first[0][1], ids[15:31])


def test_shards_refuse_another_tokenizer_and_truncated_files(shard_dir, tmp_path, tokenizer):
    with pytest.raises(ShardError, match="vocabulary of 511 tokens, but the tokenizer in use has 32064"):
        TokenStream(shard_dir, "train", 2, 16, vocab_size=32064)
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in shard_dir.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    with open(copy / "train-00001.bin", "r+b") as f:
        f.truncate(1001)
    with pytest.raises(ShardError, match="train-00001.bin holds 1001 bytes .* truncated"):
        TokenStream(copy, "train", 2, 16, tokenizer=tokenizer)
    (copy / "meta.json").unlink()
    with pytest.raises(ShardError, match="no meta.json"):
        TokenStream(copy, "train", 2, 16)
    with pytest.raises(ShardError, match="fewer than one window"):
        TokenStream(shard_dir, "val", 2, 10 ** 6)


# --- the command line -------------------------------------------------------------------------------

def _run(args, ok=True):
    result = CliRunner().invoke(tinyphi3_cli, ["data", *(str(a) for a in args)])
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def test_cli_runs_the_whole_recipe(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    _run(["web", "--docs", 600, "--seed", 2, "--out", tmp_path / "web.jsonl"])
    _run(["textbooks", "--docs", 40, "--out", tmp_path / "books.jsonl"])
    out = _run(["classifier", "train", "--input", tmp_path / "web.jsonl", "--out", tmp_path / "clf",
                "--labelled", 400])
    assert "auc_educational" in out
    (tmp_path / "mine.txt").write_text("My own page about gravity and friction.\n", encoding="utf-8")
    _run(["classifier", "score", "--classifier", tmp_path / "clf", "--input", tmp_path / "mine.txt",
          "--out", tmp_path / "scored.jsonl"])
    assert 0 <= read_documents(tmp_path / "scored.jsonl")[0]["score"] <= 1
    out = _run(["phases", "--web", tmp_path / "web.jsonl", "--web", tmp_path / "mine.txt",
                "--classifier", tmp_path / "clf", "--textbooks", tmp_path / "books.jsonl",
                "--out", tmp_path / "phases", "--light", 0.25, "--heavy", 0.75])
    assert "phase 2 (score >= 0.75)" in out
    assert {p.name for p in (tmp_path / "phases").iterdir()} >= {"phase1.jsonl", "phase2.jsonl",
                                                                  "summary.json"}
    out = _run(["tokenize", "--tokenizer", tmp_path / "tok", "--input", tmp_path / "phases/phase1.jsonl",
                "--input", tmp_path / "mine.txt", "--out", tmp_path / "shards", "--shard-tokens", 5000])
    assert "train tokens" in out
    stream = TokenStream(tmp_path / "shards", "train", 2, 32, tokenizer=tokenizer)
    assert stream.next_batch()[0].shape == (2, 32)


@pytest.mark.parametrize("command", [["web"], ["textbooks"], ["classifier", "train"],
                                     ["classifier", "score"], ["phases"], ["tokenize"]])
def test_cli_help_gives_an_example(command):
    out = _run([*command, "--help"])
    assert "Example" in out and "tinyphi3 data " + " ".join(command) in out


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    result = CliRunner().invoke(tinyphi3_cli, ["data", "classifier", "train", "--input",
                                               str(tmp_path / "empty.jsonl"), "--out",
                                               str(tmp_path / "clf")])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0
    assert result.output.startswith("error: ") and "empty.jsonl is empty" in result.output
    assert issubclass(DocumentError, TinyPhi3Error) and issubclass(ShardError, TinyPhi3Error)
