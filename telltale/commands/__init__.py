"""The ``telltale`` subcommands, one module per family (``telltale alerts`` is in
:mod:`telltale.cli`); each module's ``add(sub)`` adds its parsers and their ``cmd_*``."""
