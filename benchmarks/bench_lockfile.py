"""Why ruamel.yaml.clib is a dependency: DVC parses dvc.lock (the whole DAG's hashes and params,
~90 KB for this project) several times per stage it runs, with ruamel.yaml's ``typ="safe"``
loader, which is pure Python unless ruamel.yaml's C extension is installed. Prints the median
seconds of DVC's own ``parse_yaml`` on this repository's dvc.lock with the pure-Python parser (the
naive baseline, forced) and with the C parser where it is installed, in the same process.

    python benchmarks/bench_lockfile.py
    python benchmarks/bench_lockfile.py --lockfile path/to/dvc.lock --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from dvc.utils.serialize._yaml import parse_yaml
from ruamel.yaml import YAML


def median_seconds(load, text: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        load(text)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lockfile", type=Path, default=Path(__file__).resolve().parents[1] / "dvc.lock")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    text = args.lockfile.read_text()
    pure = median_seconds(lambda t: YAML(typ="safe", pure=True).load(t), text, args.repeats)
    dvc = median_seconds(lambda t: parse_yaml(t, str(args.lockfile)), text, args.repeats)
    try:
        import _ruamel_yaml  # noqa: F401
        c_parser = "installed"
    except ImportError:
        c_parser = "NOT installed"
    print(f"{args.lockfile} ({len(text) / 1e3:.0f} KB), median of {args.repeats}; ruamel.yaml's C parser {c_parser}")
    print(f"  pure Python (naive):  {pure:.3f} s")
    print(f"  DVC's parse_yaml:     {dvc:.3f} s")
    print(f"  speed-up: x{pure / dvc:.1f}")


if __name__ == "__main__":
    main()
