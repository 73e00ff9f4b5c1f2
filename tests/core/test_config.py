"""config.toml: the build cache retention policy, and applying it after builds."""

from __future__ import annotations

import time
from pathlib import Path

import prune_support
import pytest

from lamina.core.embedded.prune import apply_retention
from lamina.core.embedded.store import Store
from lamina.core.errors import UsageError
from lamina.core.settings import config_path, load_config

S = prune_support


def write_config(text: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_path_follows_xdg_config_home(lamina_home: Path, tmp_path: Path) -> None:
    assert config_path() == tmp_path / "config" / "lamina" / "config.toml"


def test_missing_file_means_policy_off(lamina_home: Path) -> None:
    config = load_config()
    assert config.path is None and not config.cache.enabled


def test_cache_policy_is_read(lamina_home: Path) -> None:
    path = write_config('[cache]\nkeep_storage = "5GB"\nmax_unused_age = "30d"\n')
    config = load_config()
    assert config.path == path
    assert config.cache.keep_storage == 5 * 1024**3
    assert config.cache.max_unused_age == 30 * 86400
    assert config.cache.enabled


def test_numbers_are_bytes_and_seconds(lamina_home: Path) -> None:
    write_config("[cache]\nkeep_storage = 0\nmax_unused_age = 3600\n")
    policy = load_config().cache
    assert (policy.keep_storage, policy.max_unused_age) == (0, 3600.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cache\n", "config.toml: "),
        ('[cache]\nkeep_storage = "lots"\n', "cache.keep_storage: invalid size 'lots'"),
        ('[cache]\nmax_unused_age = "a month"\n', "cache.max_unused_age: invalid duration"),
        ('[cache]\nkeep = "5GB"\n', "unknown key cache.keep"),
        ('[caches]\nkeep_storage = "5GB"\n', "unknown section or key 'caches'"),
        ("[cache]\nkeep_storage = true\n", "must be a string"),
        ("[cache]\nkeep_storage = -1\n", "must not be negative"),
        ("cache = 5\n", "[cache] must be a table"),
    ],
)
def test_bad_config_is_one_line_naming_the_file(lamina_home: Path, text: str, message: str) -> None:
    write_config(text)
    with pytest.raises(UsageError) as info:
        load_config()
    assert message in str(info.value)
    assert str(config_path()) in str(info.value) and "\n" not in str(info.value)


def test_retention_is_off_by_default(lamina_home: Path) -> None:
    store = Store(lamina_home)
    try:
        S.cache_entry(store, S.key(1), S.stack(store, [4_000], "a")[0], last_used=0.0)
        assert apply_retention(store) is None
        assert store.index.connection().execute("SELECT count(*) FROM cache").fetchone()[0] == 1
    finally:
        store.close()


def test_retention_applies_age_then_storage(lamina_home: Path) -> None:
    now = time.time()
    store = Store(lamina_home)
    try:
        base = S.stack(store, [4_000], "base")
        img = S.image(store, base, tag="base:1")
        S.cache_entry(store, S.key("stale-shared"), base[0], result=img, last_used=now - 40 * 86400)
        stale = S.stack(store, [20_000], "stale", parent=base[0])
        S.cache_entry(store, S.key("stale"), stale[0], last_used=now - 40 * 86400)
        old = S.stack(store, [20_000], "old", parent=base[0])
        S.cache_entry(store, S.key("old"), old[0], last_used=now - 86400)
        fresh = S.stack(store, [20_000], "fresh", parent=base[0])
        S.cache_entry(store, S.key("fresh"), fresh[0], last_used=now - 60)
        keep = store.layers.get(fresh[0]).size
        write_config(f'[cache]\nkeep_storage = {keep}\nmax_unused_age = "30d"\n')
        result = apply_retention(store)
        assert result is not None
        assert set(result.cache) == {S.key("stale-shared"), S.key("stale"), S.key("old")}
        left = store.index.connection().execute("SELECT key FROM cache").fetchall()
        assert [r[0] for r in left] == [S.key("fresh")]
        # The layers only the pruned entries held go with them.
        assert set(result.layers) == {stale[0], old[0]}
        # Docker's sizes of the two layers; on disk their directories and configs too.
        assert result.reclaimed_bytes == 40_000
        assert result.disk_reclaimed_bytes > 40_000
        S.assert_tagged_intact(store)
    finally:
        store.close()
