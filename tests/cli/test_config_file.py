"""``rund-trio serve --config FILE``: every flag in a TOML file, flags
overriding it, and every mistake in it one line naming the file and the key,
found before the daemon binds, claims or kills anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rund_trio.cli import config_file
from rund_trio.cli.serve_cmd import serve_parser
from rund_trio.errors import ConfigError
from rund_trio.jobs.isolation_policy import Network
from rund_trio.logs.budget import Reserve
from tests.cli.conftest import Client, Pki, rund, running_daemon
from tests.cli.test_errors import assert_one_line_error
from tests.conftest import private_cgroup_root

CONTRIB = Path(__file__).parents[2] / "contrib"


def load(tmp_path: Path, text: str) -> dict[str, object]:
    path = tmp_path / "rund-trio.toml"
    path.write_text(text)
    return config_file.load(path, serve_parser())


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    return str(raised.value)


# ------------------------------------------------------------ the keys


def test_every_serve_flag_is_a_key_named_like_it() -> None:
    parser = serve_parser()
    keys = config_file.file_keys(parser)
    flags = {
        option[2:]
        for action in parser._actions
        for option in action.option_strings[:2]
        if option.startswith("--") and option not in ("--help", "--config")
    }
    assert set(keys) == flags
    assert {"state-dir", "hide", "no-cgroups", "max-handshakes", "log-format"} <= set(keys)


def test_a_flag_added_later_is_a_key_without_any_table() -> None:
    parser = serve_parser()
    parser.add_argument("--keep-later", type=int, default=100)
    parser.add_argument("--allow-later", action="append", default=[])
    assert "keep-later" in config_file.file_keys(parser)
    path_values = {"keep-later": 5, "allow-later": ["alice", "bob"]}
    converted = {
        name: config_file._convert(config_file.file_keys(parser)[name], value)
        for name, value in path_values.items()
    }
    assert converted == {"keep-later": 5, "allow-later": ["alice", "bob"]}


def test_values_are_converted_as_on_the_command_line(tmp_path: Path) -> None:
    values = load(
        tmp_path,
        """
        addr = "[::1]:9000"
        state-dir = "/var/lib/rund-trio"
        output-cap = "64K"
        max-output-total = 1048576
        min-free-disk = "5%"
        shutdown-grace = 2
        handshake-timeout = 2.5
        pids-max = 100
        no-cgroups = true
        network = "isolated"
        run-as = "1000:1000"
        allow-uid = [1000, 1001]
        hide = ["/etc/rund-trio/ca-key.pem"]
        """,
    )
    assert values == {
        "addr": "[::1]:9000",
        "state_dir": Path("/var/lib/rund-trio"),
        "output_cap": 64 * 1024,
        "max_output_total": 1024 * 1024,
        "min_free_disk": Reserve(bytes=None, fraction=0.05),
        "shutdown_grace": 2.0,
        "handshake_timeout": 2.5,
        "pids_max": 100,
        "no_cgroups": True,
        "network": Network.ISOLATED.value,
        "run_as": (1000, 1000),
        "allow_uid": [1000, 1001],
        "hide": [Path("/etc/rund-trio/ca-key.pem")],
    }


def test_a_false_switch_leaves_its_default(tmp_path: Path) -> None:
    assert load(tmp_path, "no-cgroups = false\n") == {}


def test_the_shipped_example_is_valid() -> None:
    values = config_file.load(CONTRIB / "rund-trio.toml", serve_parser())
    assert values["state_dir"] == Path("/var/lib/rund-trio")


# ---------------------------------------------------------- its mistakes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('stat-dir = "/x"\n', "unknown key 'stat-dir' (did you mean 'state-dir'?)"),
        ('state_dir = "/x"\n', "unknown key 'state_dir' (did you mean 'state-dir'?"),
        ('config = "/x"\n', "unknown key 'config'"),
        ("pids-max = 'lots'\n", "key 'pids-max': expected an integer, not 'lots'"),
        ("pids-max = 1.5\n", "key 'pids-max': expected an integer, not 1.5"),
        ("pids-max = true\n", "key 'pids-max': expected an integer, not a boolean"),
        ("addr = 8000\n", "key 'addr': expected a string, not the number 8000"),
        ('hide = "/etc"\n', "key 'hide': expected an array"),
        ("no-cgroups = 1\n", "key 'no-cgroups': expected true or false, not the number 1"),
        ('output-cap = "12Q"\n', "key 'output-cap': '12Q' is not a size"),
        ('network = "bridge"\n', "key 'network': 'bridge' is not one of 'host', 'isolated'"),
        ('run-as = "root"\n', "key 'run-as': 'root' is not UID or UID:GID"),
        ("[caps]\nmax-running-jobs = 3\n", "unknown key 'caps'"),
        ("addr = \n", "is not valid TOML"),
    ],
)
def test_a_mistake_names_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    message = load_error(tmp_path, text)
    assert message.startswith(f"config file {tmp_path / 'rund-trio.toml'}")
    assert expected in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nowhere\.toml: No such file"):
        config_file.load(tmp_path / "nowhere.toml", serve_parser())


# ---------------------------------------------------- precedence of flags


def test_only_the_flags_typed_count_as_given() -> None:
    given = config_file.given_on_command_line(
        serve_parser(), ["--output-cap", "2K", "--hide", "/a", "--no-cgroups"]
    )
    assert {"output_cap", "hide", "no_cgroups"} <= given
    assert "state_dir" not in given and "addr" not in given


# ------------------------------------------------ a real daemon with a file


def write_config(path: Path, pki: Pki, extra: str = "") -> Path:
    path.write_text(
        f'ca = "{pki.ca}"\ncert = "{pki.cert("server")}"\nkey = "{pki.key("server")}"\n' + extra
    )
    return path


def test_serve_takes_its_flags_from_the_file(pki: Pki, tmp_path: Path) -> None:
    config = write_config(tmp_path / "rund.toml", pki, 'output-cap = "1K"\n')
    with running_daemon(["--config", config], cwd=tmp_path) as daemon:
        alice = Client(daemon, pki, "alice", tmp_path)
        log = alice("log", alice.start("head", "-c", "4096", "/dev/zero"))
    assert log.stdout == bytes(1024)
    assert "--output-cap (1 KiB per job)" in log.stderr.decode()


def test_a_flag_on_the_command_line_overrides_the_file(pki: Pki, tmp_path: Path) -> None:
    config = write_config(tmp_path / "rund.toml", pki, 'output-cap = "1K"\n')
    with running_daemon(["--config", config, "--output-cap", "2K"], cwd=tmp_path) as daemon:
        alice = Client(daemon, pki, "alice", tmp_path)
        log = alice("log", alice.start("head", "-c", "4096", "/dev/zero"))
    assert log.stdout == bytes(2048)


def test_a_repeatable_flag_replaces_the_files_array(pki: Pki, tmp_path: Path) -> None:
    config = write_config(tmp_path / "rund.toml", pki, f'hide = ["{tmp_path / "nowhere"}"]\n')
    kept = tmp_path / "secret"
    kept.write_text("x")
    with running_daemon(["--config", config, "--hide", kept], cwd=tmp_path) as daemon:
        alice = Client(daemon, pki, "alice", tmp_path)
        assert alice("run", "--", "cat", kept).stdout == b""


def test_serve_with_a_typo_in_its_file_is_one_line(pki: Pki, tmp_path: Path) -> None:
    config = write_config(tmp_path / "rund.toml", pki, "max-running-job = 3\n")
    result = rund("serve", "--config", config, cwd=tmp_path)
    assert_one_line_error(
        result, f"config file {config}", "unknown key 'max-running-job'", "'max-running-jobs'"
    )


def test_a_bad_value_only_the_daemon_can_judge_names_the_file(pki: Pki, tmp_path: Path) -> None:
    config = write_config(tmp_path / "rund.toml", pki, "max-request-size = 0\n")
    result = rund("serve", "--config", config, cwd=tmp_path)
    assert_one_line_error(result, "--max-request-size", f"(set in the config file {config})")


def test_a_bad_file_is_refused_before_any_side_effect(pki: Pki, tmp_path: Path) -> None:
    """A --hide path that does not exist, found before the port is bound, the
    cgroup subtree created or claimed, or a stale job cgroup killed."""
    cgroup_root = private_cgroup_root()
    if cgroup_root is None:
        pytest.skip("no cgroup v2 hierarchy here")
    stale = cgroup_root / "01HZX3K8Q9V7N2M4P6R8T0W2Y4"
    try:
        stale.mkdir(parents=True)
    except OSError as error:
        pytest.skip(f"cannot make cgroups here: {error}")
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        state_dir = tmp_path / "state"
        config = write_config(
            tmp_path / "rund.toml",
            pki,
            f'addr = "127.0.0.1:{port}"\ncgroup-root = "{cgroup_root}"\n'
            f'state-dir = "{state_dir}"\nhide = ["{tmp_path / "nowhere"}"]\n',
        )
        result = rund("serve", "--config", config, cwd=tmp_path)
        assert_one_line_error(result, f"cannot hide {tmp_path / 'nowhere'}", str(config))
        assert stale.is_dir(), "the stale job cgroup was left alone"
        assert not state_dir.exists()
    finally:
        stale.rmdir()
        cgroup_root.rmdir()


def test_a_state_dir_open_to_others_is_refused_before_the_cgroup_subtree_is_made(
    pki: Pki, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)
    cgroup_root = private_cgroup_root()
    cgroup_args = ["--cgroup-root", str(cgroup_root)] if cgroup_root else []
    result = rund(
        "serve", "--addr", "127.0.0.1:0", *pki.server_args(), "--state-dir", state_dir,
        *cgroup_args, cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(result, f"--state-dir {state_dir} is accessible to other users")
    assert cgroup_root is None or not cgroup_root.exists()
