"""L7: the HTTP reverse proxy.

``HERDER_NO_EXTENSIONS=1`` in the environment makes ``herder.l7.proxy`` the plain Python
source even where its compiled form is installed (a switch for comparing or ruling out the
compiled module; ``herder version`` says which form runs).
"""

import os as _os

if _os.environ.get("HERDER_NO_EXTENSIONS"):
    import importlib.util as _util
    import sys as _sys

    if "herder.l7.proxy" not in _sys.modules:
        _spec = _util.spec_from_file_location("herder.l7.proxy", _os.path.join(_os.path.dirname(__file__), "proxy.py"))
        assert _spec is not None and _spec.loader is not None
        _mod = _util.module_from_spec(_spec)
        _sys.modules["herder.l7.proxy"] = _mod
        _spec.loader.exec_module(_mod)
