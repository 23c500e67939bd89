"""io devices: --io-device values and the default set from /sys/block."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rund_trio.cgroups.devices import IoDevice, default_io_devices, parse_io_device
from rund_trio.errors import ConfigError


def test_maj_min() -> None:
    assert parse_io_device("8:0") == IoDevice(8, 0)
    assert str(parse_io_device(" 259:3 ")) == "259:3"


def test_block_device_path() -> None:
    class BlockStat:  # what os.stat says about /dev/sdb: a block device 8:16
        st_mode = stat.S_IFBLK | 0o660
        st_rdev = os.makedev(8, 16)

    def fake_stat(path: str) -> os.stat_result:
        assert path == "/dev/sdb"
        return BlockStat()  # type: ignore[return-value]

    assert parse_io_device("/dev/sdb", stat_fn=fake_stat) == IoDevice(8, 16)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sda", "expected MAJ:MIN"),
        ("8:x", "expected MAJ:MIN"),
        ("/dev/null", "is not a block device"),
        ("/nonexistent/disk", "No such file"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_io_device(spec)


def _disk(
    sys_block: Path,
    name: str,
    dev: str,
    *,
    size: str = "1000",
    removable: str = "0",
    virtual: bool = False,
) -> None:
    base = sys_block.parent / ("devices/virtual/block" if virtual else "devices/pci0/block")
    node = base / name
    node.mkdir(parents=True)
    (node / "dev").write_text(dev + "\n")
    (node / "size").write_text(size + "\n")
    (node / "removable").write_text(removable + "\n")
    (sys_block / name).symlink_to(node)


def test_default_devices_are_whole_physical_disks(tmp_path: Path) -> None:
    sys_block = tmp_path / "block"
    sys_block.mkdir()
    _disk(sys_block, "vda", "254:0")
    _disk(sys_block, "nvme0n1", "259:0")
    _disk(sys_block, "sda", "8:0")
    _disk(sys_block, "loop0", "7:0")
    _disk(sys_block, "zram0", "252:0")
    _disk(sys_block, "ram0", "1:0")
    _disk(sys_block, "sr0", "11:0", removable="1")
    _disk(sys_block, "sdb", "8:16", size="0")
    _disk(sys_block, "vbd", "250:0", virtual=True)
    assert default_io_devices(sys_block) == (IoDevice(8, 0), IoDevice(254, 0), IoDevice(259, 0))


def test_default_devices_without_sysfs(tmp_path: Path) -> None:
    assert default_io_devices(tmp_path / "missing") == ()
