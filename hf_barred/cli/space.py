"""``barred space export DIR``: write a ready Space repo (app.py, requirements.txt, README).

Example:
    $ barred space export my-space --guardrail barred/health-advice-minilm --dataset barred/health-advice
    $ huggingface-cli upload --repo-type space me/health-guardrail my-space
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("space", help="Hugging Face Space helpers.")
    actions = parser.add_subparsers(dest="space_command", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="Write a ready Space repo into DIR.")
    export.add_argument("dir", help="Folder to write.")
    export.add_argument("--guardrail", required=True, help="Guardrail Hub model id (or folder) the Space loads.")
    export.add_argument("--dataset", default="", help="Dataset Hub id (or folder) to browse.")
    export.add_argument("--title", default="hf_barred guardrail")
    export.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..space.export import export_space

    folder = export_space(args.dir, guardrail=args.guardrail, dataset=args.dataset, title=args.title)
    print(f"Wrote a Space repo to {folder}: app.py, requirements.txt, README.md, hf_barred/.")
    return 0
