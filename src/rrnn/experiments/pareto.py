"""The compared compression methods in a report: one table and the Pareto figures
(test perplexity against recurrent parameters, and against measured latency)."""

from __future__ import annotations

import statistics
import textwrap
from pathlib import Path

from ..fileio import describe_machine, describe_machines

# (marker, colour) per method; the classical layer (restrict at r = 0) is its own
# series, so that it never looks like the restricted one
STYLES = {
    "classical": ("*", "black"), "restrict": ("o", "tab:red"), "dense": ("s", "tab:gray"),
    "lowrank": ("^", "tab:blue"), "prune": ("X", "tab:green"), "iss": ("D", "tab:purple"),
}  # fmt: skip


def style(run) -> tuple[str, str]:
    """The marker and colour of a run's method in every compression figure."""
    if run.method == "restrict" and not run.train["sharing_rate"]:
        return STYLES["classical"]
    return STYLES.get(run.method, ("o", "black"))


def describe(run) -> str:
    """What the run's method built, in a few words."""
    t, m, s = run.train, run.model, run.summary
    method = run.method
    if method == "restrict":
        return f"restricted r={t['sharing_rate']:g}" if t["sharing_rate"] else "classical (r=0)"
    if method == "dense":
        return f"dense, hidden {m.get('hidden_size')}"
    if method == "lowrank":
        return f"low-rank {m.get('lowrank', 'factors')}, rank {m.get('rank')}"
    if method == "prune":
        density = s.get("density")
        kept = f", {1 - density:.1%} pruned" if density is not None else ""
        return f"pruned ({t.get('prune_schedule', 'narang')}){kept}"
    if method == "iss":
        return f"ISS, widths {s.get('widths')}"
    return method


def _latency(run, shape: str):
    if not run.latency:
        return None
    return run.latency.get("shapes", {}).get(shape)


def _fmt_latency(entry) -> str:
    if not entry:
        return "-"
    return f"{entry['latency_s'] * 1e3:.3f} ms ({entry['ratio_to_torch']:.2f}x, {entry['form']})"


def _so_far(run) -> str:
    """ ", running after N/M epochs" for a run not finished (still training, or stopped
    short): its perplexity is a best so far, not the run's result."""
    if run.finished:
        return ""
    return f", {run.status} after {run.epochs_done}/{run.train.get('epochs')} epochs"


INTRO = (
    "Recurrent parameters in Table II's convention (no embedding, no decoder): "
    "*stored* is what the compressed model keeps (for pruning the nonzero values of "
    "the CSR form plus the biases, its index arrays not counted), *nonzero* the "
    "nonzero entries, *dense* the model trained. Latency: the recurrent stack's "
    "forward pass (batch 1 one token per call; batch 80 x 35 steps), and its ratio "
    "to the classical torch.nn stack of the full size timed beside it (< 1 is faster); "
    "`rrnn report --latency` measures it."
)


def section(runs, rule: str) -> str:
    """Markdown: every run with its counts, perplexity and latency, and which wins."""
    return "\n".join(["## Compression methods", "", INTRO, "", *_table(runs, rule)])


def sections(groups: list[tuple[str, list]], rule: str) -> str:
    """:func:`section` for runs trained in several settings (``(label, runs)`` per
    setting, e.g. one lr and another): one table and verdict per setting, so that no
    method is ranked against a run trained with another recipe."""
    lines = ["## Compression methods", "", INTRO, ""]
    for label, runs in groups:
        lines += [f"### {label}", "", *_table(runs, rule), ""]
    return "\n".join(lines[:-1])


def _table(runs, rule: str) -> list[str]:
    rows = sorted(runs, key=lambda r: (r.dataset, r.rnn_params))
    lines = [
        "| method | run | recurrent params stored | nonzero | dense | test (valid) | "
        "latency batch 1 | latency batch 80 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        test, valid, _ = r.selected(rule)
        s = r.summary
        lines.append(
            f"| {describe(r)} | {r.name} | {r.rnn_params:,} | "
            f"{_int(s.get('rnn_params_nonzero'))} | {_int(s.get('rnn_params_dense'))} | "
            f"{_num(test)} ({_num(valid)}){_so_far(r)} | {_fmt_latency(_latency(r, 'stream'))} | "
            f"{_fmt_latency(_latency(r, 'batch80'))} |"
        )
    done = [r for r in runs if r.finished and r.selected(rule)[0] is not None]
    if done:
        largest = max(r.rnn_params for r in done)
        small = [r for r in done if r.rnn_params < largest]
        best = min(small, key=lambda r: r.selected(rule)[0]) if small else None
        bar = best.selected(rule)[0] if best else float("inf")
        lines.append("")
        lines.append(f"Lowest test perplexity among the finished runs below the largest model "
                     f"({largest:,}): **{describe(best)}** ({_num(bar)})." if best else
                     f"No run below the largest model ({largest:,}) has finished yet.")  # fmt: skip
        ahead = [r for r in runs if not r.finished and r.rnn_params < largest
                 and (r.selected(rule)[0] or float("inf")) < bar]  # fmt: skip
        if ahead:
            lines.append(("Lower so far" if best else "So far") + ", still training: " + "; ".join(
                f"**{describe(r)}** ({_num(r.selected(rule)[0])}{_so_far(r)})" for r in ahead) + ".")  # fmt: skip
        # the smallest model is the fastest; what a user asks is which is fastest at one size
        same = _at_one_budget(done)
        scope = f"at one size (within 2% of {_budget(done):,.0f})" if same else "among them"
        for shape, words in (("stream", "batch 1"), ("batch80", "batch 80")):
            timed = [r for r in (same or small or done) if _latency(r, shape)]
            if timed:
                fast = min(timed, key=lambda r: _latency(r, shape)["latency_s"])
                lines.append(f"Lowest {words} latency {scope}: **{describe(fast)}** "
                             f"({_fmt_latency(_latency(fast, shape))}).")  # fmt: skip
        machines = sorted({describe_machine(r.latency["machine"]) + f", {r.latency['machine'].get('threads')} thread(s)"
                           for r in runs if r.latency})  # fmt: skip
        if machines:
            lines.append("Latency measured on: " + "; ".join(machines) + ".")
        shaped = [r for r in runs if r.latency and r.latency.get("weights") == "architecture"]
        if shaped:
            lines.append(f"{len(shaped)} of the {sum(1 for r in runs if r.latency)} timed runs had no "
                         "best.pt (checkpoints are not kept with committed runs) and were timed as "
                         "their final architecture with fresh weights: a forward pass's time depends "
                         "on the shapes, a pruned model's CSR form on its nonzero count, both kept.")  # fmt: skip
        untimed = [r.name for r in done if not r.latency]
        if machines and untimed:  # finished since the last `--latency`
            lines.append(f"Not timed yet (`rrnn report --latency`): {', '.join(untimed)}.")
    # only runs that ended: a summary written mid-ramp (before this rule) may carry a note
    off = [r for r in runs if r.finished and isinstance(r.summary.get("budget_note"), str)]
    if off:
        lines += ["", "**Off budget** (more than 2% from the recurrent budget):"]
        lines += [f"- {r.name}: {r.summary['budget_note']}" for r in off]
    return lines


def _int(x) -> str:
    return f"{x:,}" if isinstance(x, int) else "-"


def _num(x) -> str:
    return f"{x:.2f}" if isinstance(x, (int, float)) else "-"


def _frontier(points):
    """The points no other point beats in both coordinates (lower is better), by x."""
    out, best = [], float("inf")
    for x, y in sorted(points):
        if y < best:
            out.append((x, y))
            best = y
    return out


def _series(run) -> str:
    """A figure's legend entry: one per method (the restricted rates share one, each
    point annotated with its rate)."""
    if run.method == "restrict" and run.train["sharing_rate"]:
        return "restricted"
    return describe(run)


def _dot(ax, run, x, y, label) -> None:
    """One run's marker; hollow while it is still training (its best so far)."""
    marker, color = style(run)
    filled = dict(color=color) if run.finished else dict(facecolors="none", edgecolors=color)
    ax.scatter(x, y, marker=marker, s=90 if marker == "*" else 60, label=label, **filled)


def _budget(runs) -> float | None:
    """The compressed runs' common size (the budget the methods are compared at), or
    None when there is no compressed run."""
    sizes = [r.rnn_params for r in runs if r.method != "restrict"]
    return statistics.median(sizes) if sizes else None


def _at_one_budget(runs, tolerance: float = 0.02) -> list:
    """The runs within ``tolerance`` of :func:`_budget`, or none."""
    budget = _budget(runs)
    if budget is None:
        return []
    return [r for r in runs if abs(r.rnn_params - budget) <= tolerance * budget]


def _fit_to_finished(ax, runs, rule: str, xs, named: bool = True) -> None:
    """Keep the axis on the finished runs: a run early in training (its perplexity
    far above them) would squash them into a line. Such a point is drawn off the top
    edge and named there with its value."""
    done = [r.selected(rule)[0] for r in runs if r.finished]
    if not done:
        return
    low, high = min(done), max(done)
    # a run still training within a fifth of the finished ones stays on the axis
    near = [r.selected(rule)[0] for r in runs if not r.finished and r.selected(rule)[0] <= 1.2 * high]
    high = max([high, *near])
    top = high + 0.25 * max(high - low, 0.05 * high)
    off = [(x, r) for x, r in zip(xs, runs) if not r.finished and r.selected(rule)[0] > top]
    if not off:
        return
    bottom = min(ax.get_ylim()[0], min(r.selected(rule)[0] for r in runs) - 0.02 * high)
    ax.set_ylim(bottom, top)
    for x, r in off:
        what = f"{describe(r)}: " if named else ""
        ax.annotate(f"{what}{_num(r.selected(rule)[0])} (above)", (x, top), xytext=(0, -10),
                    textcoords="offset points", fontsize=7, ha="center", annotation_clip=False)  # fmt: skip


def _equal_size_panel(ax, runs, rule: str) -> None:
    """The methods at one budget side by side, best first: on the size axis they
    fall on one another."""
    runs = sorted(runs, key=lambda r: r.selected(rule)[0])
    for i, r in enumerate(runs):
        _dot(ax, r, i, r.selected(rule)[0], None)
        if not r.finished:
            ax.annotate(r.status, (i, r.selected(rule)[0]), xytext=(5, 4), textcoords="offset points",
                        fontsize=7)  # fmt: skip
    ax.set_xticks(range(len(runs)))
    seeds = {r.train.get("seed") for r in runs}

    def tick(r) -> str:  # the seed only where the panel holds more than one
        seed = f", seed {r.train.get('seed')}" if len(seeds) > 1 else ""
        return f"{describe(r)}{seed}\n{r.rnn_params:,}"

    ax.set_xticklabels([tick(r) for r in runs], rotation=30, ha="right", fontsize=7)
    ax.set_xlim(-0.5, len(runs) - 0.5)
    _fit_to_finished(ax, runs, rule, range(len(runs)), named=False)  # the tick names it
    ax.set_ylabel(f"test perplexity ({rule})")
    ax.set_title("at one size (within 2%); hollow: still training", fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def _latency_ms(kind: str):
    """x of a latency panel: the run's ``kind`` latency in ms, or None where not timed."""

    def x(run):
        found = _latency(run, kind)
        return found["latency_s"] * 1e3 if found else None

    return x


def _pareto_panel(ax, done, rule: str, xlabel: str, xfn) -> None:
    """One panel: a dot per run (labelled once per series), the front of finished runs."""
    pts, labelled, noted = [], set(), set()
    for r in done:
        x, y = xfn(r), r.selected(rule)[0]
        if x is None:
            continue
        if r.finished:  # a run still training is no point of the front yet
            pts.append((x, y))
        label = _series(r)
        _dot(ax, r, x, y, None if label in labelled else label)
        labelled.add(label)
        note = [f"r={r.train['sharing_rate']:g}"] if label == "restricted" else []
        note = ", ".join(note + ([] if r.finished else [r.status]))
        if note and note not in noted:  # seeds of one setting sit together: name them once
            noted.add(note)
            ax.annotate(note, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7)
    shown = [r for r in done if xfn(r) is not None]
    _fit_to_finished(ax, shown, rule, [xfn(r) for r in shown])
    front = _frontier(pts)
    if len(front) > 1:
        ax.step(*zip(*front), where="post", color="black", alpha=0.4, lw=1,
                label="Pareto front")  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test perplexity ({rule})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _pareto_title(done, timed, setting: str, latency: bool) -> str:
    """The setting (or budget), then where the runs trained, or where they were timed."""
    if setting:
        title = f"compression methods, {setting}"
    else:
        epochs = ", ".join(sorted({str(r.train["epochs"]) for r in done}))
        title = f"compression methods, {epochs} epochs"
    if latency:
        where = "; ".join(sorted({
            describe_machine(r.latency["machine"])
            + f", {r.latency['machine'].get('threads')} thread(s)"
            for r in timed
        }))  # fmt: skip
        title += f"\nlatency on {where}"
    else:
        machine = "\n".join(describe_machines(r.machine for r in done))
        title += f"\ntrained on {machine}" if machine else ""
    return "\n".join(textwrap.fill(line, 110) for line in title.split("\n"))


def pareto_figures(runs, rule: str, out: Path, suffix: str = "", setting: str = "") -> list[Path]:
    """pareto-params.png, and pareto-latency.png where latency was measured (named
    ``pareto-params{suffix}.png`` etc. where a report has one per setting,
    ``setting`` naming it in the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in runs if r.selected(rule)[0] is not None]
    timed = [r for r in done if r.latency]
    # (file name, its panels: x label and x of a run)
    figures = [(f"pareto-params{suffix}.png",
                [("recurrent parameters stored", lambda r: r.rnn_params)])]  # fmt: skip
    if timed:
        figures.append((f"pareto-latency{suffix}.png", [
            ("latency per token, batch 1 (ms)", _latency_ms("stream")),
            ("latency per batch of 80 x 35 steps (ms)", _latency_ms("batch80")),
        ]))  # fmt: skip
    same = _at_one_budget(done)
    written = []
    for filename, panels in figures:
        latency = filename.startswith("pareto-latency")
        extra = not latency and len(same) > 1  # a panel of the runs at one size
        fig, axes = plt.subplots(1, len(panels) + extra, figsize=(6.5 * (len(panels) + extra), 4.8),
                                 squeeze=False)  # fmt: skip
        for ax, (xlabel, xfn) in zip(axes[0], panels):
            _pareto_panel(ax, done, rule, xlabel, xfn)
        if extra:
            _equal_size_panel(axes[0][-1], same, rule)
        fig.suptitle(_pareto_title(done, timed, setting, latency), fontsize=8)
        fig.tight_layout()
        path = out / filename
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
