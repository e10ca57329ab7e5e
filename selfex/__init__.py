"""The composition root: the ``selfex`` command, ``selfex up`` and the AsyncAPI assembly, above ``services/`` and ``shared/``."""
