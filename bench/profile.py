"""Summarise py-spy's collapsed stacks (``python -m bench.run --profile``) as plain text.

    python -m bench.profile var/bench/rooms100-x1-telehealth-0.pyspy.txt [--top 40]

With ``--gil`` (what ``--profile`` records) a sample is taken only while a thread holds
the GIL, so the shares below are shares of the server's Python CPU time.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def summarise(path: Path, top: int = 40) -> str:
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame.split(" (")[0] for frame in stack.split(";")]
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    if not total:
        return f"{path}: no samples"
    lines = [f"{path}: {total} samples", "", "inclusive (share of samples with this function on the stack):"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in inclusive.most_common(top)]
    lines += ["", "self (the function itself was running):"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in own.most_common(top // 2)]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    for p in args.paths:
        print(summarise(p, args.top))
        print()
