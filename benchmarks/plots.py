"""PNG plots of a run's rows (matplotlib, Agg): step time vs batch, manual vs autodiff, jaxmlp vs peers."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CORE = ("jaxmlp-manual", "jaxmlp-autodiff", "jax-optax")


def _single(rows):
    return [r for r in rows if r["K"] == 1]


def _colors(rows) -> dict:
    """One color per system, the same in every panel."""
    systems = sorted({r["system"] for r in rows})
    return {s: plt.get_cmap("tab10" if len(systems) <= 10 else "tab20")(i) for i, s in enumerate(systems)}


def step_time_vs_batch(rows, path: Path) -> Path:
    """µs per step against batch size, one panel per config that was swept (error bars: min and max)."""
    by_config = defaultdict(lambda: defaultdict(list))
    for r in _single(rows):
        by_config[r["config"]][r["system"]].append((r["batch"], r["us_per_step"], r["us_min"], r["us_max"]))
    names = [c for c, d in by_config.items() if len({b for pts in d.values() for b, *_ in pts}) > 1] or list(by_config)
    color = _colors(_single(rows))
    fig, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for system, pts in sorted(by_config[name].items()):
            b, med, lo, hi = zip(*sorted(pts))
            ax.errorbar(b, med, yerr=[[m - x for m, x in zip(med, lo)], [x - m for m, x in zip(med, hi)]],
                        marker="o", ms=3, capsize=2, label=system, color=color[system])
        batches = sorted({x for pts in by_config[name].values() for x, *_ in pts})
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="µs per step", title=name)
        ax.set_xticks(batches, [str(x) for x in batches])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(ax, groups, systems, values, ylabel):
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        ax.bar([g + i * width for g in range(len(groups))], [values.get((grp, system), 0) for grp in groups],
               width, label=system)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def manual_vs_autodiff(rows, path: Path) -> Path:
    """Step time of each system relative to the jax.grad + optax reference, per config and batch."""
    t = {(f"{r['config']} B={r['batch']}", r["system"]): r["us_per_step"] for r in _single(rows)}
    groups = sorted({g for g, s in t if s == "jax-optax"}, key=lambda g: (g.split()[0], int(g.split("=")[1])))
    rel = {(g, s): t[(g, s)] / t[(g, "jax-optax")] for g, s in t if s in CORE and (g, "jax-optax") in t}
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(groups)), 3.8))
    _bars(ax, groups, list(CORE), rel, "step time / jax.grad + optax")
    ax.axhline(1.0, color="k", lw=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def peers(rows, path: Path) -> Path:
    """µs per (model-)step on a log axis: single models at each config's default batch, then ensembles."""
    single = [r for r in _single(rows) if r["system"] not in ("jaxmlp-autodiff",)]
    default = {}
    for r in single:  # the batch where fit was timed is the config's default; else the first batch seen
        default.setdefault(r["config"], r["batch"])
        if r["system"] == "jaxmlp-fit":
            default[r["config"]] = r["batch"]
    single = [r for r in single if r["batch"] == default[r["config"]]]
    ens = [r for r in rows if r["K"] > 1]
    panels = [(single, "config", "µs per step")] + ([(ens, "ensemble", "µs per model-step")] if ens else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4), squeeze=False)
    for ax, (rs, kind, ylabel) in zip(axes[0], panels):
        label = (lambda r: f"{r['config']} B={r['batch']}") if kind == "config" else (lambda r: f"{r['config']} K={r['K']}")
        groups = list(dict.fromkeys(label(r) for r in rs))
        systems = list(dict.fromkeys(r["system"] for r in rs))
        _bars(ax, groups, systems, {(label(r), r["system"]): r["us_per_step"] for r in rs}, ylabel)
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(result: dict, out: Path) -> list[Path]:
    rows = result["rows"]
    return [step_time_vs_batch(rows, out / "step_time_vs_batch.png"),
            manual_vs_autodiff(rows, out / "manual_vs_autodiff.png"),
            peers(rows, out / "peers.png")]
