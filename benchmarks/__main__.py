"""``python -m benchmarks [--quick] [--device cpu|gpu] [--out DIR] [--torch-threads N]``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer configs, repeats and models (< 3 min on 2 cores)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="gpu also runs bf16 and width-8192 configs and reports MFU")
    parser.add_argument("--out", default=None, help="output folder (default benchmarks/results/latest-<device>)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for the PyTorch peers (default: PyTorch's own)")
    parser.add_argument("--no-peers", action="store_true", help="skip Equinox, Flax and PyTorch")
    args = parser.parse_args(argv)

    from benchmarks import suite  # imports jax: after argparse, so --help is instant

    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    p = suite.plan(args.device, quick=args.quick)
    p.peers = not args.no_peers
    out = args.out or f"benchmarks/results/latest-{args.device}"
    result = suite.run_suite(p, args.device, out)
    print(f"wrote {out}/results.json and {len(result['plots'])} plots in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
