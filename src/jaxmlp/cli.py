"""The ``jaxmlp`` command line: ``jaxmlp gradcheck`` and ``jaxmlp train``."""

from __future__ import annotations

import argparse
import sys
import time

# (output activation, loss, label format) pairings that backward supports, one gradcheck row each.
PAIRINGS = (
    ("identity", "mse", "float"),
    ("sigmoid", "mse", "float"),
    ("tanh", "mse", "float"),
    ("sigmoid", "bce", "binary"),
    ("softmax", "ce", "one-hot"),
    ("softmax", "ce", "int"),
)
ARCHITECTURES = ((5, 64, 32, 16, 1), (3, 7, 2), (4, 1))


def _targets(rng, batch, n_out, kind):
    """Random targets of the given kind (NumPy on the host: no small eager jax programs to compile)."""
    import numpy as np

    if kind == "float":
        return rng.standard_normal((batch, n_out))
    if kind == "binary":
        return (rng.random((batch, n_out)) < 0.5).astype(np.float64)
    labels = rng.integers(0, n_out, batch).astype(np.int32)
    return labels if kind == "int" else np.eye(n_out)[labels]


def _any_hidden_activation(index, names):
    """One Activation that is the hidden activation ``names[index]``, chosen by a traced ``index``.

    So one compiled program serves every hidden activation of a (architecture, output, loss) group:
    compilation, not arithmetic, is what a gradient check costs. σ(z) = Σ_k w_k σ_k(z) with w the one-hot
    vector of ``index``, and σ' alike: adding the zeros 0·σ_k(z) of finite values is exact, so values,
    hand-written derivatives and autodiff are bit for bit those of the named activation.
    """
    import jax.numpy as jnp

    from jaxmlp import activations

    hidden = [activations.get(name) for name in names]

    def select(fns):
        def sigma(z):
            w = (jnp.arange(len(fns)) == index).astype(z.dtype)
            return sum(w[k] * fn(z) for k, fn in enumerate(fns))
        return sigma

    return activations.Activation("any", select([a.fn for a in hidden]), select([a.grad for a in hidden]),
                                  kinks=(0.0,))


class _Group:
    """The loss (reference) or backward (checked) of one gradcheck group, as a user would write them for
    ``check_gradients``: ``(params, x, y, index)``, the hidden activation ``names[index]``. Compared by value,
    so that every row of a group, and every run of the process, reuses the group's compiled programs."""

    def __init__(self, names, output, loss, backward):
        self.key = (names, output, loss, backward)

    def __eq__(self, other):
        return isinstance(other, _Group) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __call__(self, params, x, y, index):
        import jaxmlp

        names, output, loss, backward = self.key
        fn = jaxmlp.backward if backward else jaxmlp.loss_fn
        return fn(params, x, y, activation=_any_hidden_activation(index, names), output_activation=output, loss=loss)


def _call(*args, fn):
    return fn(*args)


def _builtin_checks(args):
    """jaxmlp's backward, through :func:`jaxmlp.check_gradients`, for every hidden activation × pairing ×
    architecture: ``(table rows, reports)``."""
    from functools import partial

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxmlp import activations, check_gradients, init_mlp

    names = tuple(activations.HIDDEN_NAMES)
    groups = [(sizes, output, loss, kind) for sizes in ARCHITECTURES for output, loss, kind in PAIRINGS]
    rng = np.random.default_rng(args.seed)
    rows, reports = [], []
    with jax.enable_x64(True):
        for sizes, output, loss, kind in groups:
            arch = sizes[:-1] + (3,) if loss == "ce" and sizes[-1] == 1 else sizes  # ce needs two classes or more
            # A fresh function per run: jit traces the backward now loaded (a patched one in a test, say).
            backward_fn = jax.jit(partial(_call, fn=_Group(names, output, loss, backward=True)))
            loss_fn = _Group(names, output, loss, backward=False)
            for index, activation in enumerate(names):
                params = init_mlp(jax.random.key(int(rng.integers(2**31))), arch, init="he", dtype=jnp.float64)
                x = rng.standard_normal((args.batch, arch[0]))
                y = _targets(rng, args.batch, arch[-1], kind)
                report = check_gradients(params, x, y, np.int32(index), backward_fn=backward_fn, loss_fn=loss_fn,
                                         h=args.h)
                rows.append(["-".join(map(str, arch)), activation, output, f"{loss} ({kind})",
                             report.max_rel_autodiff, report.max_rel_fd, report.ok])
                reports.append(report)
    return rows, reports


def _user_check(target, args):
    """The user's model ``path/to/file.py:name`` or ``module:name``: ``name()`` returns ``(params, args,
    backward_fn, loss_fn)``, checked by :func:`jaxmlp.check_gradients`."""
    import importlib
    import importlib.util
    import os

    from jaxmlp import check_gradients

    source, _, name = target.rpartition(":")
    if not source or not name:
        raise SystemExit(f"jaxmlp gradcheck: expected path/to/file.py:name or module:name, got {target!r}")
    if source.endswith(".py") or os.sep in source:
        if not os.path.isfile(source):
            raise SystemExit(f"jaxmlp gradcheck: no such file {source!r}")
        spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(source))[0], source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(source)
    if not callable(getattr(module, name, None)):
        raise SystemExit(f"jaxmlp gradcheck: {source!r} has no function {name!r}")
    made = getattr(module, name)()
    if not (isinstance(made, tuple) and len(made) == 4 and isinstance(made[1], tuple)):
        raise SystemExit(f"jaxmlp gradcheck: {name}() must return (params, args, backward_fn, loss_fn) with args a "
                         f"tuple, got {type(made).__name__}")
    params, call_args, backward_fn, loss_fn = made
    return check_gradients(params, *call_args, backward_fn=backward_fn, loss_fn=loss_fn, h=args.h)


def gradcheck(args) -> int:
    import json

    from jaxmlp.report import format_table

    start = time.perf_counter()
    if args.target is not None:
        report = _user_check(args.target, args)
        print(json.dumps(report.to_dict(), indent=2) if args.json else report)
        return 0 if report.ok else 1
    rows, reports = _builtin_checks(args)
    failures = sum(not row[-1] for row in rows)
    if args.json:
        print(json.dumps([dict(zip(("sizes", "activation", "output", "loss"), row[:4]), **report.to_dict())
                          for row, report in zip(rows, reports)], indent=2))
        return 1 if failures else 0
    print(format_table(["sizes", "activation", "output", "loss", "max rel vs jax.grad", "max rel vs finite diff",
                        "ok"], rows))
    print(f"\n{len(rows) - failures}/{len(rows)} combinations pass (float64, through jaxmlp.check_gradients: rel "
          f"tol 1e-9 against jax.grad, 1e-6 against central differences, h = {args.h:g}) in "
          f"{time.perf_counter() - start:.1f} s")
    for row, report in zip(rows, reports):
        if not report.ok:
            print(f"\n{' '.join(map(str, row[:4]))}:\n{report}")
    return 1 if failures else 0


def _optimizer(args):
    from jaxmlp import optim

    if args.optimizer == "adam":
        return optim.adam(args.lr)
    if args.optimizer == "adamw":
        return optim.adamw(args.lr, weight_decay=args.weight_decay)
    momentum = {"gd": 0.0, "sgd": 0.0, "momentum": args.momentum, "nesterov": args.momentum}[args.optimizer]
    return optim.sgd(args.lr, momentum=momentum, nesterov=args.optimizer == "nesterov")


def _save_outputs(out, params, history, summary):
    import json
    import os

    import numpy as np

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({**summary, "history": {k: np.asarray(v).tolist() for k, v in history.items()}}, f, indent=2)
    np.savez(os.path.join(out, "params.npz"),
             **{f"{leaf}{l}": np.asarray(getattr(layer, leaf)) for l, layer in enumerate(params, 1) for leaf in "Wb"})
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no loss-curve PNG (pip install 'jaxmlp[train]')")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["epoch"], history["loss"], label="train loss")
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title=f"{summary['dataset']}: {summary['sizes']}")
    if "accuracy" in history:
        ax2 = ax.twinx()
        ax2.plot(history["epoch"], history["accuracy"], color="tab:orange", label="train accuracy")
        ax2.set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss_curve.png"), dpi=120)
    plt.close(fig)


def _epochs_per_call(epochs, checkpoint_every=None) -> int:
    """Epochs per compiled call of ``fit``: ``checkpoint_every`` when checkpointing, else the largest divisor
    of ``epochs`` that gives at least 4 calls (one call per epoch when ``epochs`` < 8). A call is a host round
    trip (progress, the divergence check) and costs a dispatch; equal calls share one compiled program, so a
    divisor keeps it to one program, and 4 of them keep the round trips off ``fit``'s per-step cost while
    the progress bar still moves and the calls after the first give a warm time per step."""
    if checkpoint_every:
        return checkpoint_every
    return max(d for d in range(1, max(epochs // 4, 1) + 1) if epochs % d == 0)


def _jitted(fn, **static):
    """``jax.jit(partial(fn, **static))``."""
    from functools import partial

    import jax

    return jax.jit(partial(fn, **static))


def _setup(key, *, sizes, init):
    """``(params, key for fit)`` from the run's key: one compiled program instead of a dozen eager ones.
    (The key is made outside it: a seed traced as int32 would refuse seeds from 2**31 on.)"""
    import jax

    from jaxmlp import init_mlp

    key_init, key_fit = jax.random.split(key)
    return init_mlp(key_init, sizes, init=init), key_fit


def _final_metrics(params, x_train, y_train, x_test, y_test, *, loss, activation, regression):
    """Train and test metrics (and the test R² for regression), compiled as one program."""
    import jax.numpy as jnp

    from jaxmlp import forward
    from jaxmlp.train import evaluate

    kw = dict(loss=loss, activation=activation)
    train_m, test_m = evaluate(params, x_train, y_train, **kw), evaluate(params, x_test, y_test, **kw)
    if regression:  # R² = 1 - Σ (ŷ - y)² / Σ (y - ȳ)² on the test set
        resid = forward(params, x_test, activation=activation) - y_test
        test_m["r2"] = 1 - jnp.sum(resid**2) / jnp.sum((y_test - jnp.mean(y_test)) ** 2)
    return train_m, test_m


def train(args) -> int:
    import jax

    from jaxmlp import datasets
    from jaxmlp.train import TrainingDiverged, fit

    spec = datasets.spec(args.dataset)
    sizes = args.sizes or [spec.n_in, 64, 32, spec.n_out]
    if sizes[0] != spec.n_in or sizes[-1] != spec.n_out:
        raise SystemExit(f"--sizes {','.join(map(str, sizes))}: {args.dataset} needs n_in = {spec.n_in} "
                         f"and n_out = {spec.n_out}")
    x_train, y_train, x_test, y_test = datasets.load(args.dataset, seed=args.seed)
    params, key_fit = _jitted(_setup, sizes=tuple(sizes), init=args.init)(jax.random.key(args.seed))
    batch_size = None if args.optimizer == "gd" or args.batch_size == 0 else min(args.batch_size, len(x_train))
    kw = dict(loss=spec.loss, activation=args.activation)
    steps_per_epoch = 1 if batch_size is None else len(x_train) // batch_size
    checkpoint_every = args.checkpoint_every if args.checkpoint_dir else None
    per_call = _epochs_per_call(args.epochs, checkpoint_every)
    print(f"jaxmlp train: {args.dataset} ({spec.task}, {len(x_train)} train / {len(x_test)} test), sizes {sizes}, "
          f"{args.activation}, loss {spec.loss}, {args.optimizer} lr {args.lr}, batch {batch_size or 'full'}, "
          f"{args.epochs} epochs of {steps_per_epoch} steps, grad {args.grad}, on {jax.devices()[0].platform}")
    bar = None
    if args.progress:
        try:
            from tqdm import tqdm  # imported only here, when a bar is drawn
            bar = tqdm(total=args.epochs, unit="epoch")
        except ImportError:
            pass
    calls = []  # (epoch, time) after each compiled call of `per_call` epochs

    def progress(epoch, metrics):
        calls.append((epoch, time.perf_counter()))
        if bar is not None:
            bar.set_postfix({k: f"{v:.4f}" for k, v in metrics.items()}, refresh=False)
            bar.update(epoch - bar.n)

    start = time.perf_counter()
    try:
        params, history = fit(params, x_train, y_train, optimizer=_optimizer(args), epochs=args.epochs,
                              batch_size=batch_size, key=key_fit, grad=args.grad, epochs_per_call=per_call,
                              callback=progress, checkpoint_dir=args.checkpoint_dir,
                              checkpoint_every=checkpoint_every, **kw)
    except (TrainingDiverged, ValueError) as e:  # a step too large; a checkpoint this run cannot resume
        hint = f" Try a smaller --lr (this run: {args.lr:g})." if isinstance(e, TrainingDiverged) else ""
        print(f"jaxmlp train: {e}.{hint}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    metrics = _jitted(_final_metrics, regression=spec.task == "regression", **kw)(
        params, x_train, y_train, x_test, y_test)
    train_m, test_m = ({k: float(v) for k, v in m.items()} for m in metrics)
    # The first call compiles (or loads from the cache); the later ones are compiled epochs, one dispatch
    # each: their time per step is fit's. A run of one call has none to measure.
    warm_steps = (calls[-1][0] - calls[0][0]) * steps_per_epoch if calls else 0
    step_us = 1e6 * (calls[-1][1] - calls[0][1]) / warm_steps if warm_steps else None
    summary = {
        "dataset": args.dataset, "sizes": sizes, "activation": args.activation, "init": args.init,
        "loss": spec.loss, "optimizer": args.optimizer, "lr": args.lr, "batch_size": batch_size,
        "epochs": args.epochs, "grad": args.grad, "seed": args.seed,
        **{f"train_{k}": v for k, v in train_m.items()}, **{f"test_{k}": v for k, v in test_m.items()},
        "time_per_step_us": step_us,
        "first_call_s": (calls[0][1] - start) if calls else None,
    }
    print("  ".join(f"{k} {v:.4f}" for k, v in summary.items() if k.startswith(("train_", "test_"))))
    timing = (f"time per step {step_us:.1f} us (compiled calls of {per_call} epochs x {steps_per_epoch} steps)"
              if step_us is not None else "time per step not measured (a single compiled call; it needs 2 or more)")
    first = f"; compile + first call {summary['first_call_s']:.2f} s" if calls else ""
    print(f"{timing}{first}; total {time.perf_counter() - start:.2f} s")
    if args.out:
        _save_outputs(args.out, params, history, summary)
        print(f"wrote {args.out}/metrics.json, params.npz, loss_curve.png")
    else:
        print("nothing saved: pass --out DIR to write metrics.json, params.npz and loss_curve.png")
    return 0


def _positive(kind, zero_ok=False):
    """argparse type: a ``kind`` (int or float) that is > 0 (>= 0 with ``zero_ok``), and finite."""
    bound = "non-negative" if zero_ok else "positive"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {bound} {kind.__name__}, got {text!r}") from None
        if not (value >= 0 if zero_ok else value > 0) or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a {bound} {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = f"{bound} {kind.__name__}"
    return parse


def _unit_interval(text):
    """argparse type for --momentum: a float in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a float in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a float in [0, 1), got {text!r}")
    return value


def _widths(text):
    """argparse type for --sizes: comma-separated positive ints."""
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints like 64,64,32,10, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected at least two positive widths, got {text!r}")
    return sizes


def _add_cache_flags(p):
    p.add_argument("--no-cache", action="store_true",
                   help="do not use jax's persistent compilation cache (nothing is written to disk)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="compilation cache directory (default: $XDG_CACHE_HOME/jaxmlp, or ~/.cache/jaxmlp)")
    p.epilog = ("Compiled programs are kept in jax's persistent compilation cache, so a rerun loads them "
                "instead of compiling (jaxmlp.enable_compilation_cache); --no-cache turns it off.")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after every flag's help; a switch is ``(default: off)``; where the default is None
    the help text says what None means (``default: ...`` written out), so nothing is added."""

    def _get_help_string(self, action):
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return action.help + " (default: off)"
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    """The ``jaxmlp`` argument parser; every flag's choices and default are in ``--help``."""
    from jaxmlp import activations, datasets, initializers

    fmt = _HelpFormatter
    parser = argparse.ArgumentParser(prog="jaxmlp", description=__doc__, formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("gradcheck", formatter_class=fmt,
                       help="check a backward against jax.grad and finite differences: jaxmlp's own for every "
                            "activation x output x loss, or your model's",
                       description="Check a backward with jaxmlp.check_gradients. Without TARGET: jaxmlp's own "
                                   "backward, every hidden activation x (output, loss) on three architectures. "
                                   "Exit status 0 when every check passes, 1 when one fails.")
    p.add_argument("target", nargs="?", default=None, metavar="TARGET",
                   help="your model, path/to/file.py:name or module:name, where name() returns (params, args, "
                        "backward_fn, loss_fn), args a tuple (default: jaxmlp's own backward)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (for CI) instead of the table")
    p.add_argument("--seed", type=int, default=0, help="seed of the parameters and data")
    p.add_argument("--batch", type=_positive(int), default=8, help="examples per check (a positive int)")
    p.add_argument("--h", type=_positive(float), default=1e-6, help="finite-difference step")
    _add_cache_flags(p)
    p.set_defaults(run=gradcheck)

    t = sub.add_parser("train", formatter_class=fmt,
                       help="train an MLP on a bundled dataset (default: digits)",
                       description="Train an MLP on a bundled dataset and report train and test metrics.")
    t.add_argument("--dataset", default="digits", choices=datasets.NAMES, help="dataset; it picks the loss")
    t.add_argument("--sizes", type=_widths, default=None, help="comma-separated widths, e.g. 64,64,32,10 "
                                                   "(default: n_in,64,32,n_out of the dataset)")
    t.add_argument("--activation", default="relu", choices=activations.HIDDEN_NAMES, help="hidden activation")
    t.add_argument("--init", default="he", choices=initializers.NAMES, help="weight initialization")
    t.add_argument("--optimizer", default="adam", help="gd is full-batch; momentum and nesterov use --momentum, "
                   "adamw --weight-decay", choices=["adam", "adamw", "sgd", "gd", "momentum", "nesterov"])
    t.add_argument("--weight-decay", type=_positive(float, zero_ok=True), default=1e-4,
                   help="AdamW's decoupled weight decay (non-negative; used by --optimizer adamw)")
    t.add_argument("--lr", type=_positive(float), default=3e-3, help="learning rate (positive)")
    t.add_argument("--momentum", type=_unit_interval, default=0.9, help="momentum in [0, 1)")
    t.add_argument("--epochs", type=_positive(int), default=40, help="epochs (positive)")
    t.add_argument("--batch-size", type=_positive(int, zero_ok=True), default=64,
                   help="minibatch size; 0 (or --optimizer gd) for full batch")
    t.add_argument("--seed", type=int, default=0, help="seed of the split, the init and the minibatches")
    t.add_argument("--grad", default="manual", choices=["manual", "autodiff"],
                   help="hand-derived backward or jax.grad")
    t.add_argument("--out", default=None, metavar="DIR", help="directory for metrics.json, params.npz, "
                                                              "loss_curve.png (default: none, nothing is saved)")
    t.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="write checkpoints here and resume from the latest (default: none, no checkpoints)")
    t.add_argument("--checkpoint-every", type=_positive(int), default=5, help="epochs between checkpoints")
    t.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (it needs tqdm, imported only when drawn)")
    _add_cache_flags(t)
    t.set_defaults(run=train)
    return parser


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if not args.no_cache:
        from jaxmlp.compilation_cache import enable_compilation_cache

        try:
            enable_compilation_cache(args.cache_dir)
        except OSError as e:  # an unwritable or unsafe directory costs the cache, not the run
            print(f"jaxmlp: no compilation cache ({e}); every program will be compiled. --no-cache silences "
                  f"this, --cache-dir DIR picks another directory", file=sys.stderr)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
