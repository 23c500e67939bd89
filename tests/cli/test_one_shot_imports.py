"""A one-shot client command loads only what it needs: the import of a
module it does not use is a cost every `rund-trio client status` pays."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys

import pytest

from rund_trio.cli import main

NOT_NEEDED = (
    "dataclasses",
    "inspect",
    "shutil",
    "rund_trio.cli.serve_cmd",
    "rund_trio.cli.certs_cmd",
    "rund_trio.cli.execute_cmd",
    "rund_trio.server",
)

PROGRAM = f"""
import sys
from rund_trio.cli.main import build_parser
build_parser("client", "status").parse_args(["client", "status", "--addr", "localhost:1", "job"])
import rund_trio.cli.tls_discovery, rund_trio.client.api, rund_trio.rpc._blocking
print(" ".join(name for name in {NOT_NEEDED!r} if name in sys.modules))
"""


def test_parsing_and_connecting_a_client_command_imports_nothing_it_does_not_use() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []


@pytest.mark.parametrize("named", [("client",), ("client", "status")])
def test_a_named_command_and_action_parse_as_the_whole_command_line_does(
    named: tuple[str, ...],
) -> None:
    argv = ["client", "status", "--addr", "h:1", "job"]
    whole = vars(main.build_parser().parse_args(argv))
    alone = vars(main.build_parser(*named).parse_args(argv))
    assert whole == alone


@pytest.mark.parametrize("columns", ["", "0", "57", "wide"])
def test_help_is_as_wide_as_shutil_says_the_terminal_is(
    monkeypatch: pytest.MonkeyPatch, columns: str
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    assert main._terminal_columns() == shutil.get_terminal_size().columns


def test_start_up_done_resumes_the_collections_start_up_went_without() -> None:
    gc.disable()
    try:
        main.start_up_done()
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()


def test_a_command_run_in_process_leaves_collections_on_however_it_ends() -> None:
    with pytest.raises(SystemExit):
        main.main(["--version"])
    assert gc.isenabled()
    assert (
        main.main(["client", "status", "--addr", "localhost:1", "--ca", "/nonexistent", "x"]) == 1
    )
    assert gc.isenabled()
