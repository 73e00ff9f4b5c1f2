"""The command line imports only what a verb uses.

``lamina --help``, ``system df`` and a cached ``build`` run in a fresh interpreter each,
and the modules loaded when the verb returns are checked: the Textual app, the docker
SDK, zstandard and the registry client (urllib3, ssl) load only for the verbs that
need them, so these three start about as fast as Python itself. A behaviour test: it
looks at what was imported, never at how long that took.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Never needed by these verbs: the app, the Docker backend, compressed archives, and
# the registry client with what it brings (TLS, HTTP).
HEAVY = ("textual", "rich", "docker", "zstandard", "urllib3", "ssl", "http.client")

PROBE = """\
import json, sys
from lamina.tui.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def loaded(home: Path, *argv: str) -> set[str]:
    env = dict(os.environ, LAMINA_HOME=str(home))
    env.pop("LAMINA_ENGINE", None)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), proc.stderr
    return set(report["modules"])


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)


def test_help_loads_no_engine_no_app_no_network(tmp_path: Path) -> None:
    modules = loaded(tmp_path / "store", "--help")
    assert "lamina.tui.cli.build" in modules, "the probe ran the real command line"
    assert heavy(modules) == []
    # Not even the store: `--help` opens nothing.
    assert "sqlite3" not in modules and "lamina.core.embedded.store" not in modules
    assert "humanize" not in modules
    assert not [m for m in modules if m.startswith("lamina.core.advice")], "advise's rules"


def test_system_df_loads_the_store_and_nothing_it_does_not_use(tmp_path: Path) -> None:
    modules = loaded(tmp_path / "store", "system", "df")
    assert "lamina.core.embedded.usage" in modules and "sqlite3" in modules
    assert heavy(modules) == []
    assert "lamina.core.embedded.builder.walk" not in modules


def test_a_cached_build_loads_the_builder_but_not_the_app_or_the_network(
    tmp_path: Path,
) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "a.txt").write_text("a\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY src /src\n")
    home = tmp_path / "store"
    loaded(home, "build", "-t", "x:1", str(ctx))
    modules = loaded(home, "build", "-t", "x:1", str(ctx))
    assert "lamina.core.embedded.builder.walk" in modules
    assert heavy(modules) == []
    assert not [m for m in modules if m.startswith("lamina.core.advice")], "advise's rules"


def test_a_registry_verb_still_finds_what_it_imports_late(tmp_path: Path) -> None:
    # The registry names moved into the handlers, so the verb must still run.
    env = dict(os.environ, DOCKER_CONFIG=str(tmp_path / "docker"), HOME=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "lamina.tui", "logout", "localhost:5999"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Not logged in to localhost:5999" in proc.stdout
