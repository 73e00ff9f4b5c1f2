"""The distribution's shape: import names, and a core that never pulls in the UI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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


def _modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    """Top-level names of the modules a fresh interpreter holds after running ``code``."""
    script = (
        code + "\nimport sys\nprint(' '.join(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    ).stdout
    return set(out.splitlines()[-1].split())


def test_importing_the_public_api_loads_nothing_behind_it() -> None:
    loaded = _modules_after("import lamina.core")
    assert not loaded & {"textual", "rich", "docker", "sqlite3", "humanize"}
    # And every name it publishes resolves (each import is deferred, not missing).
    assert "sqlite3" in _modules_after("import lamina.core as c\nc.rebuild_index")


def test_help_and_verbs_load_neither_textual_nor_the_docker_sdk(tmp_path: Path) -> None:
    help_ = (
        "from lamina.tui.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    loaded = _modules_after(help_)
    assert not loaded & {"textual", "rich", "docker", "sqlite3"}
    env = dict(os.environ, LAMINA_HOME=str(tmp_path / "store"), LAMINA_ENGINE="embedded")
    loaded = _modules_after("from lamina.tui.cli import main\nmain(['images'])", env)
    assert "sqlite3" in loaded  # the verb did read the store
    assert not loaded & {"textual", "rich", "docker"}
