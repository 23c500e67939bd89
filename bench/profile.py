"""Summaries of py-spy's raw (collapsed-stack) recordings of the daemon."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def summarize(name: str, path: Path, top: int = 12) -> str:
    if not path.exists():
        return f"profile {name}: no recording ({path})"
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f]
        if frames:
            own[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
    if not total:
        return f"profile {name}: empty"
    lines = [f"profile {name} ({total} samples, {path}):", "  self time:"]
    lines += [f"    {c / total:6.1%}  {f}" for f, c in own.most_common(top)]
    lines.append("  inclusive (rund_trio / purerpc / h2 / ssl frames):")
    interesting = [
        (f, c)
        for f, c in inclusive.most_common()
        if any(k in f for k in ("rund_trio", "purerpc", "h2/", "ssl", "protobuf"))
    ]
    lines += [f"    {c / total:6.1%}  {f}" for f, c in interesting[:top]]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file, _, _line = where.rpartition(":")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{func} ({file})"
