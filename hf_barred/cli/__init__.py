"""The ``barred`` command: :mod:`.main` holds the registry and the dispatch, one module per subcommand
(``register(subparsers)`` and ``run(args)``); :mod:`.engine_options` the engine flags they share;
:mod:`.flags` flags that take their default and help from the config field they set.

Run it as ``barred`` or ``python -m hf_barred.cli``.
"""
