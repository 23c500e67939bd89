"""The isolation spec: validation, and the spec/status wire formats."""

from __future__ import annotations

import marshal

import pytest

from rund_trio.errors import InvalidRequest
from rund_trio.isolation import wire
from rund_trio.isolation.id_range import IdRange
from rund_trio.isolation.spec import Isolation, IsolationSpec, Namespaces, hostname_for_job
from rund_trio.process.helper import program_pid_line, spawn_error


def spec(**isolation: object) -> IsolationSpec:
    return IsolationSpec(("true",), {"PATH": "/bin"}, None, Isolation(**isolation))  # type: ignore[arg-type]


def test_default_isolation_is_pid_mount_uts_ipc_with_host_network() -> None:
    assert Isolation().namespaces == Namespaces(pid=True, mount=True, uts=True, ipc=True, net=False)


def test_round_trip_keeps_every_field() -> None:
    original = IsolationSpec(
        ("prog", "a b", "\udcff-not-utf8"),
        {"PATH": "/bin", "EMPTY": ""},
        "/work",
        Isolation(
            namespaces=Namespaces(net=True),
            hostname="rund-01hzx",
            rootfs="/srv/root",
            uid=65534,
            gid=65533,
            cgroup_dir="/sys/fs/cgroup/rund/job",
        ),
    )
    decoded = IsolationSpec.from_bytes(original.to_bytes())
    assert decoded.argv == original.argv
    assert dict(decoded.env) == dict(original.env)
    assert decoded.cwd == original.cwd
    assert decoded.isolation == original.isolation


def test_gid_defaults_to_uid_on_the_wire() -> None:
    record = wire.decode_spec(spec(uid=1000).to_bytes())
    assert (record["uid"], record["gid"]) == (1000, 1000)


def test_no_credentials_by_default() -> None:
    record = wire.decode_spec(spec().to_bytes())
    assert (record["uid"], record["gid"]) == (None, None)


def test_wire_starts_with_magic_then_marshal() -> None:
    data = spec().to_bytes()
    assert data.startswith(wire.SPEC_MAGIC)
    assert marshal.loads(data[len(wire.SPEC_MAGIC) :])["argv"] == ["true"]


@pytest.mark.parametrize(
    "data",
    [b"", b"RUND-SPEC 2\n", wire.SPEC_MAGIC + b"\xff\x00", wire.SPEC_MAGIC + marshal.dumps([1])],
)
def test_garbage_on_the_spec_fd_is_rejected(data: bytes) -> None:
    with pytest.raises(InvalidRequest):
        IsolationSpec.from_bytes(data)


def test_record_with_wrong_types_is_rejected() -> None:
    record = spec().to_record()
    record["uid"] = True
    with pytest.raises(wire.WireError, match="uid"):
        wire.decode_spec(wire.SPEC_MAGIC + marshal.dumps(record))


def test_empty_argv_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="program"):
        IsolationSpec(()).validate()


def test_nul_in_argument_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="NUL"):
        IsolationSpec(("echo", "a\0b")).validate()


def test_bad_environment_name_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="environment"):
        IsolationSpec(("env",), {"A=B": "c"}).validate()


def test_pid_namespace_needs_mount_namespace() -> None:
    with pytest.raises(InvalidRequest, match="mount namespace"):
        spec(namespaces=Namespaces(mount=False)).validate()


def test_hostname_needs_uts_namespace() -> None:
    with pytest.raises(InvalidRequest, match="UTS"):
        spec(namespaces=Namespaces(uts=False), hostname="x").validate()


@pytest.mark.parametrize("name", ["", "-lead", "has space", "a" * 65, "ünï"])
def test_invalid_hostname_is_rejected(name: str) -> None:
    with pytest.raises(InvalidRequest, match="hostname"):
        spec(hostname=name).validate()


def test_rootfs_needs_mount_namespace() -> None:
    with pytest.raises(InvalidRequest, match="mount namespace"):
        spec(namespaces=Namespaces.none(), rootfs="/srv/root").validate()


@pytest.mark.parametrize("rootfs", ["relative/dir", "/", "//"])
def test_rootfs_must_be_absolute_and_not_slash(rootfs: str) -> None:
    with pytest.raises(InvalidRequest, match="rootfs"):
        spec(rootfs=rootfs).validate()


def test_cwd_must_be_absolute_with_rootfs() -> None:
    with pytest.raises(InvalidRequest, match="cwd"):
        IsolationSpec(("ls",), cwd="sub", isolation=Isolation(rootfs="/srv/root")).validate()


@pytest.mark.parametrize("uid", [-1, 2**32 - 1, 2**40])
def test_out_of_range_uid_is_rejected(uid: int) -> None:
    with pytest.raises(InvalidRequest, match="uid"):
        spec(uid=uid).validate()


def test_relative_cgroup_dir_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="cgroup_dir"):
        spec(cgroup_dir="rund/job").validate()


def test_no_isolation_is_valid() -> None:
    spec(namespaces=Namespaces.none(), contained=False).validate()


def test_hostname_for_job_is_rund_and_twelve_lowercase_ulid_chars() -> None:
    assert hostname_for_job("01HZX3K4M5N6P7Q8R9S0T1V2W3") == "rund-01hzx3k4m5n6"
    spec(hostname=hostname_for_job("01HZX3K4M5N6P7Q8R9S0T1V2W3")).validate()


def test_status_line_round_trips() -> None:
    line = wire.encode_status(2, "exec", "No such file or directory: 'x'")
    assert line == b"2 exec No such file or directory: 'x'\n"
    assert wire.decode_status(line) == (2, "exec", "No such file or directory: 'x'")


def test_garbled_status_line_still_decodes() -> None:
    assert wire.decode_status(b"Traceback...") == (0, "helper", "Traceback...")


def test_status_becomes_spawn_error_naming_errno_and_step() -> None:
    error = spawn_error("prog", b"13 pivot_root Permission denied\n")
    assert error.errno == 13
    assert error.reason == "pivot_root: EACCES (Permission denied)"
    assert error.program == "prog"


def test_hidden_paths_need_a_mount_namespace() -> None:
    with pytest.raises(InvalidRequest, match="mount namespace"):
        spec(namespaces=Namespaces.none(), hidden=("/srv/state",)).validate()


@pytest.mark.parametrize("path", ["relative/dir", "/", ""])
def test_a_hidden_path_must_be_absolute_and_not_the_root(path: str) -> None:
    with pytest.raises(InvalidRequest, match="hidden path"):
        spec(hidden=(path,)).validate()


def test_hidden_paths_travel_to_the_helper() -> None:
    hidden = ("/srv/state", "/etc/rund/key.pem")
    assert IsolationSpec.from_bytes(spec(hidden=hidden).to_bytes()).isolation.hidden == hidden


def test_a_record_whose_hidden_paths_are_not_strings_is_rejected() -> None:
    record = spec().to_record()
    record["hidden"] = [b"/srv/state"]
    with pytest.raises(wire.WireError, match="hidden"):
        wire.decode_spec(wire.SPEC_MAGIC + marshal.dumps(record))


@pytest.mark.parametrize(
    "contained",
    [
        {"ids": [1, 1, 1], "caps": 1},
        {"ids": [1, 1, 1], "caps": True, "seccomp": b"x" * 8},
        {"ids": [1, 1, 1], "caps": 2**64, "seccomp": b"x" * 8},
        {"ids": [1, 1, 1], "caps": 1, "seccomp": b""},
        {"ids": [1, 1, 1], "caps": 1, "seccomp": "not bytes"},
        {"ids": [1, 1], "caps": 1, "seccomp": b"x" * 8},
        {"ids": [1, -1, 1], "caps": 1, "seccomp": b"x" * 8},
        {"caps": 1, "seccomp": b"x" * 8},
        [1, b"x"],
    ],
)
def test_a_malformed_contained_record_is_refused(contained: object) -> None:
    record = IsolationSpec(("true",)).to_record()
    record["contained"] = contained
    with pytest.raises(wire.WireError, match="contained"):
        wire.check_record(record)


def test_a_contained_spec_carries_its_ids_capabilities_and_filter_and_round_trips() -> None:
    spec = IsolationSpec(("true",), isolation=Isolation(contained=True))
    contained = spec.to_record()["contained"]
    assert isinstance(contained, dict)
    assert contained["ids"] and contained["caps"] and contained["seccomp"]
    assert IsolationSpec.from_bytes(spec.to_bytes()).isolation.contained


@pytest.mark.parametrize(
    ("status", "pid", "rest"),
    [
        (b"job 42\n", 42, b""),
        (b"job 42\n2 exec No such file\n", 42, b"2 exec No such file\n"),
        (b"2 exec No such file\njob 42\n", 42, b"2 exec No such file\n"),
        (b"2 exec No such file\n", None, b"2 exec No such file\n"),
        (b"", None, b""),
    ],
)
def test_the_program_pid_line_is_found_before_or_after_a_failure(
    status: bytes, pid: int | None, rest: bytes
) -> None:
    assert program_pid_line(status) == (pid, rest)


def test_a_contained_job_needs_pid_and_mount_namespaces() -> None:
    with pytest.raises(InvalidRequest, match="contained job needs PID and mount"):
        spec(namespaces=Namespaces(pid=False, mount=False)).validate()


def test_a_contained_jobs_uid_must_be_inside_its_user_namespace() -> None:
    with pytest.raises(InvalidRequest, match="uid 70000 is outside"):
        spec(uid=70000).validate()


def test_the_id_range_travels_to_the_helper() -> None:
    ids = IdRange(300000, 400000, 65536)
    original = IsolationSpec(("true",), isolation=Isolation(id_range=ids))
    decoded = IsolationSpec.from_bytes(original.to_bytes())
    assert (decoded.isolation.contained, decoded.isolation.id_range) == (True, ids)


def test_a_host_profile_spec_travels_without_a_user_namespace() -> None:
    original = IsolationSpec(("true",), isolation=Isolation(contained=False))
    assert original.to_record()["contained"] is None
    assert not IsolationSpec.from_bytes(original.to_bytes()).isolation.contained
