"""`refinery k8s render`: the KubeRay manifests (a RayService, RayJobs for docs and logs)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from jobs.k8s import DEFAULT_IMAGE, DEFAULT_OUT, DEFAULT_SERVE_CONFIG

    parser = subparsers.add_parser("k8s", help="KubeRay manifests: RayService and RayJobs")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    render = actions.add_parser(
        "render",
        help="write the RayService and the RayJobs (deploy/k8s/ holds this render)",
    )
    render.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"folder, or - for stdout (default: {DEFAULT_OUT})"
    )
    render.add_argument(
        "--image", default=DEFAULT_IMAGE, help=f"image with the project (default: {DEFAULT_IMAGE})"
    )
    render.add_argument(
        "--serve-config",
        default=str(DEFAULT_SERVE_CONFIG),
        help=f"the RayService's serveConfigV2 (default: {DEFAULT_SERVE_CONFIG})",
    )
    render.set_defaults(func=_render)


def _render(args: argparse.Namespace) -> int:
    from jobs.k8s import render, write

    files = render(args.image, args.serve_config)
    if args.out == "-":
        # One stream of documents, ready for `kubectl apply -f -`.
        sys.stdout.write("---\n".join(files.values()))
        return 0
    for path in write(files, args.out):
        print(path)
    return 0
