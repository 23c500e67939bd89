"""Where contained jobs' host ids come from: the flag, /etc/subuid, the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from rund_trio.errors import ConfigError
from rund_trio.isolation import id_range
from rund_trio.isolation.id_range import IdRange


def test_the_flag_gives_the_same_start_to_uids_and_gids() -> None:
    assert id_range.parse("300000:65536") == IdRange(300000, 300000, 65536)


@pytest.mark.parametrize("text", ["300000", "a:65536", "300000:-1", ":65536"])
def test_a_malformed_flag_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="START:COUNT"):
        id_range.parse(text)


def test_a_range_too_small_for_nobody_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least 65536"):
        id_range.parse("300000:1000")


def test_a_range_past_the_last_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ends above"):
        id_range.parse(f"{2**32 - 10}:65536")


def test_the_subid_files_rund_trio_entries_are_used(tmp_path: Path) -> None:
    (tmp_path / "subuid").write_text("alice:100000:65536\nrund-trio:300000:131072\n")
    (tmp_path / "subgid").write_text("rund-trio:500000:65536\n")
    ids = id_range.from_subid(subuid=tmp_path / "subuid", subgid=tmp_path / "subgid")
    assert ids == IdRange(300000, 500000, 65536)


def test_without_subid_entries_there_is_no_range_from_them(tmp_path: Path) -> None:
    (tmp_path / "subuid").write_text("alice:100000:65536\n")
    ids = id_range.from_subid(subuid=tmp_path / "subuid", subgid=tmp_path / "missing")
    assert ids is None


def test_an_entry_in_only_one_subid_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "subuid").write_text("rund-trio:300000:65536\n")
    (tmp_path / "subgid").write_text("")
    with pytest.raises(ConfigError, match="no 'rund-trio' entry"):
        id_range.from_subid(subuid=tmp_path / "subuid", subgid=tmp_path / "subgid")


def test_the_default_range_is_unprivileged_and_valid() -> None:
    id_range.DEFAULT.validate()
    assert id_range.DEFAULT.uid_start > 1879048191  # beyond systemd-nspawn's ranges
