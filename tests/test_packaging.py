"""The distribution's shape: import names, and a core that never pulls in the UI."""

from __future__ import annotations

import subprocess
import sys


def test_core_and_tui_install_under_lamina() -> None:
    import lamina.core
    import lamina.tui

    assert lamina.core.__name__ == "lamina.core"
    assert lamina.tui.__name__ == "lamina.tui"


def test_no_generic_top_level_core_or_tui() -> None:
    code = "import importlib.util as u; print(u.find_spec('core'), u.find_spec('tui'))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    ).stdout
    assert out.strip() == "None None"


def test_core_never_imports_textual_or_rich() -> None:
    code = (
        "import pkgutil, importlib, sys, lamina.core as c\n"
        "for m in pkgutil.walk_packages(c.__path__, 'lamina.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('textual', 'rich'))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
