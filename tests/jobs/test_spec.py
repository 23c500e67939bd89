"""Validation of what a Start request asks for: environment, working
directory and terminal (pure functions, no daemon)."""

from __future__ import annotations

import pytest

from rund_trio.cgroups.limits import Limits
from rund_trio.errors import InvalidRequest, ResourceExhausted
from rund_trio.jobs.spec import (
    MAX_ENV_ENTRIES,
    Terminal,
    parse_env,
    parse_job_spec,
    parse_terminal,
    parse_working_dir,
)


def test_env_entries_become_pairs_in_order() -> None:
    assert parse_env(["A=1", "B=", "A=2"]) == (("A", "1"), ("B", ""), ("A", "2"))


def test_env_value_may_hold_equals_signs() -> None:
    assert parse_env(["URL=a=b=c"]) == (("URL", "a=b=c"),)


def test_env_entry_without_equals_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="not NAME=VALUE"):
        parse_env(["FOO"])


def test_env_empty_name_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="empty name"):
        parse_env(["=value"])


def test_env_nul_in_name_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="NUL byte in its name"):
        parse_env(["A\0B=1"])


def test_env_nul_in_value_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="NUL byte in its value"):
        parse_env(["A=1\0"])


def test_env_cannot_replace_the_job_id() -> None:
    with pytest.raises(InvalidRequest, match="RUND_JOB_ID is set by the daemon"):
        parse_env(["RUND_JOB_ID=x"])


def test_env_over_the_byte_cap_is_resource_exhausted() -> None:
    parse_env(["A=" + "x" * 7], max_bytes=10)  # 9 bytes + NUL: exactly at the cap
    with pytest.raises(ResourceExhausted, match="--max-env-bytes"):
        parse_env(["A=" + "x" * 8], max_bytes=10)


def test_env_byte_cap_counts_utf8_bytes() -> None:
    with pytest.raises(ResourceExhausted):
        parse_env(["A=é"], max_bytes=4)  # 'A=é' is 4 bytes, plus the NUL


def test_env_without_byte_cap_accepts_large_values() -> None:
    assert parse_env(["A=" + "x" * 1_000_000], max_bytes=None)[0][1] == "x" * 1_000_000


def test_env_over_the_entry_cap_is_resource_exhausted() -> None:
    with pytest.raises(ResourceExhausted, match="entries"):
        parse_env([f"V{i}=1" for i in range(MAX_ENV_ENTRIES + 1)], max_bytes=None)


def test_working_dir_defaults_to_root() -> None:
    assert parse_working_dir("") == "/"


def test_working_dir_keeps_an_absolute_path() -> None:
    assert parse_working_dir("/srv/build") == "/srv/build"


def test_working_dir_must_be_absolute() -> None:
    with pytest.raises(InvalidRequest, match="not absolute"):
        parse_working_dir("src")


def test_working_dir_with_nul_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="NUL"):
        parse_working_dir("/tmp\0x")


def test_working_dir_over_path_max_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="longer than"):
        parse_working_dir("/" + "a" * 5000)


def test_no_tty_means_no_terminal() -> None:
    assert parse_terminal(False, 0, 0, "") is None


def test_tty_defaults_to_24_by_80_xterm() -> None:
    assert parse_terminal(True, 0, 0, "") == Terminal(24, 80, "xterm")


def test_tty_keeps_the_size_and_term_asked_for() -> None:
    assert parse_terminal(True, 50, 132, "vt100") == Terminal(50, 132, "vt100")


def test_terminal_size_without_tty_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="without a tty"):
        parse_terminal(False, 30, 0, "")


def test_terminal_size_over_a_short_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="0 to 65535"):
        parse_terminal(True, 70000, 80, "")


def test_term_with_a_space_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="terminal type"):
        parse_terminal(True, 0, 0, "x term")


def test_job_spec_carries_env_dir_stdin_and_terminal() -> None:
    spec = parse_job_spec(
        "sh",
        [],
        Limits(),
        env=["A=1"],
        working_dir="/tmp",
        stdin=True,
        terminal=Terminal(),
    )
    assert spec.env == (("A", "1"),)
    assert spec.working_dir == "/tmp"
    assert spec.stdin
    assert spec.terminal == Terminal()


def test_job_spec_applies_the_env_byte_cap_it_is_given() -> None:
    with pytest.raises(ResourceExhausted):
        parse_job_spec("sh", [], Limits(), env=["A=" + "x" * 100], max_env_bytes=50)
