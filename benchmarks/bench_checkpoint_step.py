"""Training steps of a saved language model on real PTB windows: ms per step, and
how many of its last layer's outputs are subnormal.

    python benchmarks/bench_checkpoint_step.py RUN/checkpoint.pt --threads 2
    python benchmarks/bench_checkpoint_step.py RUN/checkpoint.pt --flush-denormal

A random model on random tokens times the shapes; a trained model on its own data
also times its values, and on some CPUs values cost time: subnormal numbers (below
float32's 1.2e-38) slow GEMMs down where the hardware handles them in microcode
(docs/benchmarks.md, "Subnormal hidden states"). Each step is what training does
(fused loss, backward, clipping at 0.25, SGD at the checkpoint's last lr, momentum
0.9), from windows 50, 51, ... of the training split; the model's weights change
from step to step as in training. --flush-denormal sets torch.set_flush_denormal
before anything runs, for comparison.
"""

import argparse
import statistics
import time

import torch

from rrnn.fileio import describe_machine, machine
from rrnn.lm import data as D
from rrnn.lm.checkpoint import load_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("checkpoint", help="a run's checkpoint.pt or best.pt")
    ap.add_argument("--data-dir", default=None, help="datasets folder (default $RRNN_DATA_DIR)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after 3 untimed)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True)")
    args = ap.parse_args()
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.build_model()
    cfg = ckpt.train_config
    lr = ckpt.progress.history[-1]["lr"] if ckpt.progress.history else cfg["lr"]
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])  # fmt: skip
    corpus = D.load_corpus(cfg["dataset"], None, args.data_dir, log=lambda *a: None)
    train = D.batchify(corpus.train, cfg["batch_size"])  # (tokens, B)
    model.train()
    hidden = model.init_hidden(cfg["batch_size"])

    def step(i, hidden):
        data, targets = D.get_batch(train, (50 + i) * cfg["bptt"], cfg["bptt"])
        hidden = tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()
        opt.zero_grad(set_to_none=True)
        loss, hidden = model(data, hidden, targets=targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        opt.step()
        return hidden

    for i in range(3):
        hidden = step(i, hidden)
    times = []
    for i in range(3, 3 + args.steps):
        start = time.perf_counter()
        hidden = step(i, hidden)
        times.append(time.perf_counter() - start)
    model.eval()  # no dropout: the count does not depend on the random mask
    with torch.no_grad():  # the last layer's outputs over one window, as the decoder reads them
        data, _ = D.get_batch(train, 50 * cfg["bptt"], cfg["bptt"])
        out, _ = model.rnn(model.encoder(data), model.init_hidden(cfg["batch_size"]))  # (T, B, H)
        small = (out != 0) & (out.abs() < torch.finfo(out.dtype).tiny)
        units = small.sum((0, 1)).nonzero().flatten().tolist()
    print(f"{describe_machine(machine())}, {torch.get_num_threads()} threads, flush denormal "
          f"{args.flush_denormal}; {args.checkpoint} (epoch {ckpt.progress.epoch})")  # fmt: skip
    print(f"  {statistics.median(times) * 1e3:.0f} ms per step (median of {args.steps}); "
          f"{int(small.sum()):,} of {out.numel():,} last-layer outputs subnormal "
          f"({small.float().mean().item():.2%}), in units {units}")  # fmt: skip


if __name__ == "__main__":
    main()
