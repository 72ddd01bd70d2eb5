"""Subcommands of ``barred``: one module each, with ``register(subparsers)``.

``register`` adds a subparser and sets ``run`` as its default: ``parser.set_defaults(run=run)``;
``run(args)`` returns the exit code. Heavy imports (torch, transformers) go inside ``run`` so that
``barred --help`` stays fast.
"""
