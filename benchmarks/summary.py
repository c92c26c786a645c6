"""Markdown tables of one run, for the README: ``python -m benchmarks.summary DIR``.

Reads ``DIR/results.json`` (and ``DIR/wide_dots.json`` when present) and prints, per config at its default
batch, median µs per step of jaxmlp's manual step, the jax.grad + optax reference and the PyTorch peers,
with the ratios of medians and of minimums, the load average and the isolation of the run. Every number
printed comes from those files: nothing is typed by hand into the README.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PEERS = ("equinox", "equinox-jit", "flax-nnx", "torch-eager", "torch-compile", "torch-eager-1thread")


def _ms(us: float) -> str:
    return f"{us / 1e3:.3g} ms" if us >= 1e3 else f"{us:.3g} µs"


def suite_table(res: dict) -> str:
    groups = {}
    for r in res["rows"]:
        if r["K"] == 1:
            groups.setdefault((r["config"], r["batch"], tuple(r["sizes"])), {})[r["system"]] = r
    head = ["config", "jaxmlp manual", "jax.grad + optax", "manual / ref"]
    peers = [p for p in PEERS if any(p in g for g in groups.values())]
    for p in peers:
        head += [p, f"manual / {p} (median; min)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for (config, batch, sizes), g in groups.items():
        if "jaxmlp-manual" not in g:
            continue
        m, ref = g["jaxmlp-manual"], g.get("jax-optax")
        cells = [f"{config} {list(sizes)} / {batch}", _ms(m["us_per_step"]),
                 _ms(ref["us_per_step"]) if ref else "", f"{m['us_per_step'] / ref['us_per_step']:.2f}" if ref else ""]
        for p in peers:
            if p in g:
                cells += [_ms(g[p]["us_per_step"]), f"{m['us_per_step'] / g[p]['us_per_step']:.3g}; "
                                                    f"{m['us_min'] / g[p]['us_min']:.3g}"]
            else:
                cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    compile_rows = [r for r in res["rows"] if r["system"] == "torch-compile"]
    notes = ["torch.compile compile time: " + ", ".join(f"{r['config']} {r['compile_s']:.0f} s" for r in compile_rows)
             ] if compile_rows else []
    notes.append(f"load average: {res.get('loadavg', {}).get('note', 'not recorded')}; start "
                 f"{[round(x, 1) for x in res.get('loadavg', {}).get('start', [])]}, end "
                 f"{[round(x, 1) for x in res.get('loadavg', {}).get('end', [])]}")
    notes.append(f"isolation: {res.get('isolation', 'not recorded')}; torch threads: {res.get('torch_threads')}")
    return "\n".join(lines) + "\n\n" + "\n".join("- " + n for n in notes)


def digits_table(res: dict) -> str | None:
    """The digits job: jaxmlp.fit against scikit-learn's MLPClassifier, µs per step and seconds per job."""
    rows = [r for r in res["rows"] if r["config"] == "digits"]
    if not rows:
        return None
    sk = next((r for r in rows if r["system"] == "sklearn-mlp"), None)
    lines = ["| digits job | µs per step | s per job | / sklearn (per step) |", "| --- | ---: | ---: | ---: |"]
    for r in rows:
        ratio = f"{r['us_per_step'] / sk['us_per_step']:.2f}" if sk else ""
        lines.append(f"| {r['system']} | {r['us_per_step']:.1f} | {r['us_per_step'] * r['steps_per_call'] / 1e6:.3f} "
                     f"| {ratio} |")
    return "\n".join(lines)


def user_step_table(res: dict) -> str | None:
    if not res.get("user_step"):
        return None
    from benchmarks.user_step import table

    return table(res["user_step"])


def wide_dots_table(res: dict) -> str:
    variants = list(res["variants"])
    lines = ["| op | " + " | ".join(variants) + " |", "|" + " --- |" * (len(variants) + 1)]
    for op, stats in res["ops"].items():
        cells = []
        for v in variants:
            s = stats.get(f"{op}[{v}]")
            cells.append(f"{s['us_per_step'] / 1e3:.1f} (min {s['us_min'] / 1e3:.1f})" if s else "")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    out = "ms per product, median (min):\n\n" + "\n".join(lines)
    if res.get("steps"):
        torch = res["steps"].get("torch-eager[torch]")
        out += "\n\n| step | ms (median) | ms (min) | / torch-eager, 2 threads (median; min) |\n| --- | ---: | ---: | ---: |\n"
        for k, s in res["steps"].items():
            ratio = f"{s['us_per_step'] / torch['us_per_step']:.2f}; {s['us_min'] / torch['us_min']:.2f}" if torch else ""
            out += f"| {k} | {s['us_per_step'] / 1e3:.1f} | {s['us_min'] / 1e3:.1f} | {ratio} |\n"
    load = res.get("loadavg", {})
    return out + f"\nload average: start {[round(x, 1) for x in load.get('start', [])]}, end " \
                 f"{[round(x, 1) for x in load.get('end', [])]}"


def main(argv=None) -> int:
    folder = Path((argv or sys.argv[1:] or ["benchmarks/results/latest-cpu"])[0])
    if (folder / "results.json").exists():
        res = json.loads((folder / "results.json").read_text())
        print(suite_table(res))
        for extra in (digits_table(res), user_step_table(res)):
            if extra:
                print()
                print(extra)
    if (folder / "user_step.json").exists():
        print()
        print(user_step_table(json.loads((folder / "user_step.json").read_text())))
    if (folder / "wide_dots.json").exists():
        print()
        print(wide_dots_table(json.loads((folder / "wide_dots.json").read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
