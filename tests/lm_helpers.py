"""A small generated corpus with learnable structure, and helpers for LM tests."""

import random
from pathlib import Path

# a model small enough for a CLI test to train in a second
TINY = [
    "--layers", "1", "--embedding-size", "8", "--hidden-size", "8", "--batch-size", "4",
    "--eval-batch-size", "4", "--bptt", "8", "--log-interval", "50", "--threads", "1",
]  # fmt: skip


def write_corpus(folder: Path, train_lines=400, eval_lines=60, seed=0, extra_eval_words=()):
    """Sentences from a tiny grammar; valid/test may hold words train lacks."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "my friend", "the bank", "our team"]
    verbs = ["sees", "likes", "buys", "sells", "finds"]
    objects = ["the fish", "a ball", "some stock", "the report", "a car"]
    folder.mkdir(parents=True, exist_ok=True)

    def lines(n):
        out = []
        for _ in range(n):
            words = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}".split()
            if rng.random() < 0.3:
                words += ["and", *rng.choice(objects).split()]
            out.append(" " + " ".join(words) + " ")
        return out

    (folder / "train.txt").write_text("\n".join(lines(train_lines)) + "\n")
    for split in ("valid", "test"):
        body = lines(eval_lines)
        if extra_eval_words:
            body.append(" " + " ".join(extra_eval_words) + " ")
        (folder / f"{split}.txt").write_text("\n".join(body) + "\n")
    return folder


def small_config(corpus: Path, **overrides):
    from rrnn.lm.train import TrainConfig

    base = dict(
        dataset=None,
        corpus=str(corpus),
        cell="lstm",
        sharing_rate=0.5,
        layers=2,
        embedding_size=16,
        hidden_size=16,
        epochs=3,
        batch_size=4,
        eval_batch_size=4,
        bptt=8,
        lr=1.0,
        log_interval=10,
        threads=1,
        seed=3,
    )
    base.update(overrides)
    return TrainConfig(**base)


def epochs_without_time(summary):
    return [{k: v for k, v in h.items() if k != "elapsed"} for h in summary["history"]]
