"""`python -m retrieval.extraction precision`: what `auto` precision chooses here, and why."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from retrieval.extraction.inference import KINDS, auto_decision, resolve_device
from retrieval.models.net import build_net


def main(argv: Sequence[str] | None = None) -> None:
    """Show (or, with --remeasure, remake) the cached `auto` decisions of some trunks."""
    parser = argparse.ArgumentParser(prog="python -m retrieval.extraction", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    precision = commands.add_parser("precision", help=main.__doc__)
    precision.add_argument("--backbone", nargs="+", default=["efficientnet_lite0", "resnet50"])
    precision.add_argument("--weights", default="none", help="none or imagenet (backbone.weights)")
    precision.add_argument("--kind", nargs="+", default=list(KINDS), choices=KINDS)
    precision.add_argument("--device", default="auto")
    precision.add_argument("--remeasure", action="store_true", help="measure again, replace cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = resolve_device(args.device)
    for backbone in args.backbone:
        net = build_net(backbone, "gem", weights=args.weights)
        for kind in args.kind:
            decision = auto_decision(device, net, kind, remeasure=args.remeasure)
            print(f"{backbone} {kind} on {device}: {decision.precision} ({decision.reason})")


if __name__ == "__main__":
    main()
