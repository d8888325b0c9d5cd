"""Optional compiled L7 hot path.

``herder/l7/proxy.py`` is plain Python and runs as such. When Cython and a C compiler are
there at install time, it is also compiled (its declarations are in ``proxy.pxd``), and the
compiled module is the one imported: about 1.5x less Python time per proxied request. If
the build fails, herder installs and runs on the plain module (``herder version`` says which).
Set ``HERDER_NO_EXTENSIONS=1`` to skip the build.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the extensions, but never fail the install because of them."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler, no headers...
            print(f"herder: compiled L7 hot path not built ({e}); the plain Python one is used", file=sys.stderr)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:
            print(f"herder: {ext.name} not built ({e}); the plain Python one is used", file=sys.stderr)


def extensions() -> list:
    if os.environ.get("HERDER_NO_EXTENSIONS"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("herder: Cython not available; the L7 hot path runs as plain Python", file=sys.stderr)
        return []
    try:
        # The types come from proxy.pxd alone (the .py annotations are for readers and mypy).
        return cythonize(["herder/l7/proxy.py"], quiet=True, compiler_directives={
            "language_level": "3", "annotation_typing": False, "infer_types": True})
    except Exception as e:  # a Cython error must not make herder uninstallable
        print(f"herder: the L7 hot path was not compiled ({e}); it runs as plain Python", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
