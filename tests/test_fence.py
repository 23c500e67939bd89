"""The fence around the gRPC layer: purerpc, h2, hyperframe and hpack are
imported by rund_trio/rpc (the protocol) and the generated stubs in
rund_trio/api, and nowhere else. Everything else speaks gRPC through
``rund_trio.rpc``, so that upgrading or replacing any of them touches one
package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCED = ("purerpc", "h2", "hyperframe", "hpack")
INSIDE = ("rund_trio/rpc/", "rund_trio/api/")
HOSTILE_PEERS = {
    # Test tools that play a broken or rude client byte by byte: they must not
    # share the code they test, so they speak HTTP/2 through h2 directly.
    "tests/raw_grpc.py",
    "tests/integration/rawh2.py",
}
SCANNED = ("rund_trio", "tests", "bench", "loadtest", "scripts")


def fenced_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [name for name in names if name.split(".")[0] in FENCED]
    return found


def test_only_the_rpc_package_and_the_generated_stubs_import_the_grpc_libraries() -> None:
    breaches = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(INSIDE) or relative in HOSTILE_PEERS or "/.venv/" in relative:
                continue
            breaches += [f"{relative}: import {name}" for name in fenced_imports(path)]
    assert breaches == []


def test_the_fence_check_sees_every_form_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import h2.connection\nfrom purerpc.grpclib import status\nimport hyperframe as hf\n"
        "from . import h2\nimport h2o\n"
    )
    assert fenced_imports(sample) == ["h2.connection", "purerpc.grpclib", "hyperframe"]
