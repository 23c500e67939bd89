"""How the client assembles a job's environment from -e and --env-file
(docker's rules), without a daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from rund_trio.cli.job_env import job_env, read_env_file
from rund_trio.errors import ConfigError

CLIENT_ENV = {"USER": "alice", "EMPTY": ""}


def test_name_value_entries_are_sent_as_they_are() -> None:
    assert job_env(["A=1", "B=x=y"], [], CLIENT_ENV) == ["A=1", "B=x=y"]


def test_a_name_alone_takes_the_clients_value() -> None:
    assert job_env(["USER", "EMPTY"], [], CLIENT_ENV) == ["USER=alice", "EMPTY="]


def test_a_name_alone_the_client_does_not_have_is_left_out() -> None:
    assert job_env(["NOPE"], [], CLIENT_ENV) == []


def test_nothing_else_of_the_clients_environment_is_sent() -> None:
    assert job_env([], [], CLIENT_ENV) == []


def test_an_entry_without_a_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="no variable name"):
        job_env(["=x"], [], CLIENT_ENV)


def test_env_file_lines_come_before_dash_e(tmp_path: Path) -> None:
    file = tmp_path / "env"
    file.write_text("A=from-file\nB=2\n")
    assert job_env(["A=from-flag"], [file], CLIENT_ENV) == ["A=from-file", "B=2", "A=from-flag"]


def test_env_file_skips_comments_and_blank_lines_and_trims_leading_space(tmp_path: Path) -> None:
    file = tmp_path / "env"
    file.write_text("# a comment\n\n   \n  A=1\n\tUSER\nNOPE\n")
    assert read_env_file(file, CLIENT_ENV) == ["A=1", "USER=alice"]


def test_env_file_values_are_literal(tmp_path: Path) -> None:
    file = tmp_path / "env"
    file.write_text('Q="quoted" $HOME # not a comment \n')
    assert read_env_file(file, CLIENT_ENV) == ['Q="quoted" $HOME # not a comment ']


def test_env_file_with_a_bom_reads_its_first_line(tmp_path: Path) -> None:
    file = tmp_path / "env"
    file.write_bytes(b"\xef\xbb\xbfA=1\r\nB=2\r\n")
    assert read_env_file(file, CLIENT_ENV) == ["A=1", "B=2"]


def test_env_file_name_with_whitespace_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "env"
    file.write_text("MY VAR=1\n")
    with pytest.raises(ConfigError, match=r"line 1.*whitespace"):
        read_env_file(file, CLIENT_ENV)


def test_env_file_line_without_name_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "env"
    file.write_text("A=1\n=2\n")
    with pytest.raises(ConfigError, match="line 2 has no variable name"):
        read_env_file(file, CLIENT_ENV)


def test_env_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "env"
    file.write_bytes(b"A=\xff\n")
    with pytest.raises(ConfigError, match="line 1 is not valid UTF-8"):
        read_env_file(file, CLIENT_ENV)


def test_missing_env_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the env file .*missing"):
        read_env_file(tmp_path / "missing", CLIENT_ENV)
