"""Corpora: tokenization, vocabulary, checksums, downloader, batching."""

import hashlib
import http.server
import os
import socketserver
import threading
from pathlib import Path

import pytest
import torch

from rrnn.lm import data as D

from .lm_helpers import write_corpus


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RRNN_CACHE_DIR", str(tmp_path / "cache"))


def test_tokenization_and_vocab_order(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "train.txt").write_text(" b a b \n\n c a \n")
    (folder / "valid.txt").write_text(" a z \n")
    (folder / "test.txt").write_text(" q q c \n")
    logs = []
    corpus = D.load_corpus(corpus_dir=folder, log=logs.append)
    # first appearance order; blank line still one <eos>; unknowns -> <unk> (added)
    assert corpus.itos == ["b", "a", "<eos>", "c", "<unk>"]
    assert corpus.train.tolist() == [0, 1, 0, 2, 2, 3, 1, 2]
    assert corpus.valid.tolist() == [1, 4, 2]
    assert corpus.test.tolist() == [4, 4, 3, 2]
    assert corpus.unk_mapped == {"valid": 1, "test": 2}
    assert any("valid: 1 tokens" in m for m in logs) and any("test: 2 tokens" in m for m in logs)


def test_cache_is_keyed_by_file_hash(tmp_path):
    folder = write_corpus(tmp_path / "c")
    first = D.load_corpus(corpus_dir=folder, log=lambda m: None)
    cached = list((tmp_path / "cache" / "tokens").glob("*.pt"))
    assert len(cached) == 1
    again = D.load_corpus(corpus_dir=folder, log=lambda m: None)
    assert torch.equal(first.train, again.train) and first.itos == again.itos
    (folder / "train.txt").write_text(" x y \n" * 20)  # new content, new key
    changed = D.load_corpus(corpus_dir=folder, log=lambda m: None)
    assert changed.itos[:2] == ["x", "y"]
    assert len(list((tmp_path / "cache" / "tokens").glob("*.pt"))) == 2


def test_batchify_and_windows():
    tokens = torch.arange(26)
    source = D.batchify(tokens, 4)
    assert source.shape == (6, 4)
    assert source[:, 0].tolist() == [0, 1, 2, 3, 4, 5]  # column = contiguous stream
    assert source[0].tolist() == [0, 6, 12, 18]
    x, y = D.get_batch(source, 0, 2)
    assert x.shape == (2, 4) and torch.equal(y, source[1:3].reshape(-1))
    x, y = D.get_batch(source, 4, 2)  # the short last window
    assert x.shape == (1, 4) and torch.equal(y, source[5])
    assert D.num_windows(source, 2) == 3
    covered = sum(D.get_batch(source, i, 2)[1].numel() for i in range(0, 5, 2))
    assert covered == (6 - 1) * 4


def test_batching_too_large_and_empty_split(tmp_path):
    folder = write_corpus(tmp_path / "c", train_lines=5, eval_lines=2)
    corpus = D.load_corpus(corpus_dir=folder, log=lambda m: None)
    with pytest.raises(
        D.DataError, match=r"train split .* fewer than --batch-size x \(bptt \+ 1\)"
    ):
        D.check_batching(corpus, 80, 35, ("train",))
    (folder / "test.txt").write_text("")
    with pytest.raises(D.DataError, match="test.txt is empty"):
        D.load_corpus(corpus_dir=folder, log=lambda m: None)
    (folder / "valid.txt").unlink()
    with pytest.raises(D.DataError, match="valid.txt"):
        D.load_corpus(corpus_dir=folder)


def test_unknown_dataset():
    with pytest.raises(D.DataError, match="unknown dataset 'ptb2'.*ptb, wikitext-2"):
        D.load_corpus("ptb2")


# --- checksums and downloads -----------------------------------------------
def _spec(files: dict[str, bytes], urls) -> D.DatasetSpec:
    return D.DatasetSpec(
        "toy", {s: hashlib.sha256(b).hexdigest() for s, b in files.items()}, tuple(urls)
    )


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *args):
            pass

    httpd = socketserver.TCPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


FILES = {"train": b" a b c \n a b \n", "valid": b" a c \n", "test": b" b c \n"}


def test_download_from_second_mirror_and_verify(server, tmp_path):
    root, base = server
    (root / "good").mkdir()
    for split, body in FILES.items():
        (root / "good" / f"{split}.txt").write_bytes(body)
    spec = _spec(FILES, [f"{base}/gone/{{split}}.txt", f"{base}/good/{{split}}.txt"])
    paths = D.ensure_dataset(spec, tmp_path / "data", progress=False, log=lambda m: None)
    for split, body in FILES.items():
        assert paths[split].read_bytes() == body
    assert not [p for p in (tmp_path / "data" / "toy").iterdir() if p.name.startswith(".")]


def test_download_corrupt_file_is_refused_and_not_kept(server, tmp_path):
    root, base = server
    (root / "bad").mkdir()
    for split, body in FILES.items():
        (root / "bad" / f"{split}.txt").write_bytes(body + b"tampered")
    spec = _spec(FILES, [f"{base}/bad/{{split}}.txt"])
    with pytest.raises(D.DataError) as info:
        D.ensure_dataset(spec, tmp_path / "data", progress=False, log=lambda m: None)
    msg = str(info.value)
    assert "missing train.txt, valid.txt, test.txt" in msg
    assert spec.sha256["train"] in msg and "served a file with sha256" in msg
    assert list((tmp_path / "data" / "toy").iterdir()) == []  # no partial files left


def test_offline_error_says_which_files_to_put_where(tmp_path):
    spec = _spec(FILES, ["http://127.0.0.1:9/{split}.txt"])  # nothing listens on port 9
    with pytest.raises(D.DataError) as info:
        D.ensure_dataset(spec, tmp_path / "data", progress=False, log=lambda m: None)
    msg = str(info.value)
    for split in ("train", "valid", "test"):
        assert str(tmp_path / "data" / "toy" / f"{split}.txt") in msg
        assert spec.sha256[split] in msg
    assert "RRNN_DATA_DIR" in msg


def test_corrupt_local_file_names_file_and_hashes(tmp_path):
    folder = tmp_path / "data" / "toy"
    folder.mkdir(parents=True)
    for split, body in FILES.items():
        (folder / f"{split}.txt").write_bytes(body)
    (folder / "valid.txt").write_bytes(b" changed \n")
    spec = _spec(FILES, [])
    with pytest.raises(D.DataError) as info:
        D.ensure_dataset(spec, tmp_path / "data", download=False, log=lambda m: None)
    msg = str(info.value)
    assert str(folder / "valid.txt") in msg and spec.sha256["valid"] in msg
    assert hashlib.sha256(b" changed \n").hexdigest() in msg


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("RRNN_DATA_DIR", str(tmp_path))
    assert D.data_dir() == tmp_path
    assert D.data_dir("/x") == Path("/x")
    monkeypatch.delenv("RRNN_DATA_DIR")
    assert D.data_dir() == Path.home() / ".cache" / "rrnn"


# --- the real corpora --------------------------------------------------------
def _real_root():
    for candidate in (
        os.environ.get("RRNN_DATA_DIR"),
        Path(__file__).parents[2] / "shared" / "data",
    ):
        if candidate and (Path(candidate) / "ptb" / "train.txt").is_file():
            return Path(candidate)
    return None


REAL = _real_root()


@pytest.mark.skipif(REAL is None, reason="real PTB/WikiText-2 not found (set RRNN_DATA_DIR)")
@pytest.mark.parametrize(
    "name,vocab,counts",
    [
        ("ptb", 10_000, (929_589, 73_760, 82_430)),
        ("wikitext-2", 33_278, (2_088_628, 217_646, 245_569)),
    ],
)
def test_real_corpus_statistics(name, vocab, counts):
    corpus = D.load_corpus(name, data_root=REAL, download=False, log=lambda m: None)
    assert corpus.vocab_size == vocab
    assert (corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()) == counts
    assert corpus.unk_mapped == {}


def test_every_cache_is_a_subfolder_of_one_root(tmp_path, monkeypatch):
    from rrnn.fileio import cache_root
    from rrnn.kernels import native, tuning

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RRNN_CACHE_DIR", "~/c")  # ~ expanded everywhere, not only here
    root = tmp_path / "c"
    assert cache_root() == root
    assert D.cache_dir() == root / "tokens"
    assert native._cache_dir() == root / "kernels"
    assert tuning.cache_path("k") == root / "dispatch" / "k.json"
