"""The face: what a user drives from outside Python code — the ``featviz`` command line,
sweeps over many channels, and the gallery page. It may import from every tier below."""
