"""``python -m benchmarks [--quick] [--device cpu|gpu] [--out DIR] [--torch-threads N] [--first-result-only]
[--compile-budget-only] [--user-step-only]``."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer batches, repeats and models")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="gpu also runs bf16 and width-8192 configs and reports MFU")
    parser.add_argument("--out", default=None, help="output folder (default benchmarks/results/latest-<device>)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for the PyTorch peers (default: PyTorch's own, one per core)")
    parser.add_argument("--no-peers", action="store_true", help="skip Equinox, Flax, PyTorch and scikit-learn")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per system (default: 3 quick, 7 full)")
    parser.add_argument("--in-process", action="store_true",
                        help="run every system in this one process (default: each system in its own process)")
    parser.add_argument("--first-result-only", action="store_true",
                        help="only the 'time to first result' section (fresh processes; benchmarks/first_result.py)")
    parser.add_argument("--no-first-result", action="store_true", help="skip the 'time to first result' section")
    parser.add_argument("--no-gradcheck", action="store_true", help="time to first result without jaxmlp gradcheck")
    parser.add_argument("--compile-budget-only", action="store_true",
                        help="only fit's compile time, and its parts (fresh processes; benchmarks/compile_budget.py)")
    parser.add_argument("--no-compile-budget", action="store_true", help="skip the compile budget section")
    parser.add_argument("--user-step-only", action="store_true",
                        help="only the user-step section: a user's jitted step, jaxmlp.backward against jax.grad, "
                             "in one process (benchmarks/user_step.py); writes user_step.json")
    parser.add_argument("--no-user-step", action="store_true", help="skip the user-step section")
    args = parser.parse_args(argv)
    out = args.out or f"benchmarks/results/latest-{args.device}"
    repeats = 1 if args.quick else 3
    if args.device == "gpu":  # every process of the run shares one GPU: none may take 75 % of it up front
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.user_step_only:
        from benchmarks import user_step

        user_step.main(out, repeats=args.repeats or (3 if args.quick else 7),
                       min_repeat_s=0.05 if args.quick else 0.2, device=args.device)
        print(f"wrote {out}/user_step.json")
        return 0
    if args.compile_budget_only:
        _compile_budget(out, repeats)
        return 0
    if args.first_result_only:
        _first_result(out, repeats, args)
        return 0

    from benchmarks import suite  # imports jax: after argparse, so --help is instant

    p = suite.plan(args.device, quick=args.quick)
    p.peers = not args.no_peers
    p.torch_threads = args.torch_threads  # set in each PyTorch worker process
    p.isolate = not args.in_process
    if args.repeats is not None:
        p.repeats = args.repeats
    if args.no_user_step:
        p.user_step = []
    result = suite.run_suite(p, args.device, out)
    print(f"wrote {out}/results.json and {len(result['plots'])} plots in {result['wall_s']:.0f} s")
    if not args.no_first_result:
        _first_result(out, repeats, args)
    return 0


def _first_result(out, repeats, args):
    from benchmarks import first_result

    first_result.run(out, repeats=repeats, gradcheck=not args.no_gradcheck)
    print(f"wrote {out}/first_result.json")
    if not args.no_compile_budget:
        _compile_budget(out, repeats)


def _compile_budget(out, repeats):
    from benchmarks import compile_budget

    compile_budget.run(out, repeats=repeats)
    print(f"wrote {out}/compile_budget.json")


if __name__ == "__main__":
    sys.exit(main())
