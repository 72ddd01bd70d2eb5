"""Subcommands of ``barred``: one module each, with ``register(subparsers)``.

``register`` adds a subparser and sets ``run`` as its default: ``parser.set_defaults(run=run)``;
``run(args)`` returns the exit code. Heavy imports (torch, transformers) go inside ``run`` so that
``barred --help`` stays fast. A module without ``register`` is a helper the commands share:
:mod:`~hf_barred.commands.engine_options` holds the one set of engine flags.
"""
