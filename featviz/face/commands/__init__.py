"""The subcommands of the ``featviz`` command, one module each.

Every module defines ``add(subparsers)``, which adds its parser (its flags, and ``run`` as the
function that runs it), and ``run(args, load)``, which calls the Python API and returns the
exit status; ``load`` is the model loader the entry point hands over
(:func:`.common.load_model`). What several commands share lies in :mod:`.common`.
:func:`featviz.face.cli.build_parser` registers the modules from its list ``COMMANDS``.
"""
