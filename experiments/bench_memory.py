"""Peak memory of decoding one 1024x1024-input image of 30 people, per decoder.

    python experiments/bench_memory.py [--people 30] [--input-size 1024] [--limit-mb 1024] [--methods ...]

Each method runs in a fresh process (this script with ``--one NAME``): it imports torch and bottomup, renders the
codec's ideal maps of a crowd of ``--people`` (``tests/people.py``; maps at stride 4, 256x256 for a 1024 input, and
HigherHRNet's heatmaps also at stride 2), then decodes them once. Reported, in MB:

* ``decode MB``: the peak RSS during the decode call above the RSS just before it (what decoding costs). On Linux the
  kernel's peak mark is reset before decoding (``/proc/self/clear_refs``), so transient memory of the rendering does
  not hide the decode's; elsewhere the baseline is the peak so far and the figure is a lower bound.
* ``maps MB``: the size of the decoder's input maps.
* ``process peak MB``: the peak RSS of the whole process (Python, torch, maps and decode).

Exit status 1 when a decode costs more than ``--limit-mb``.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("openpose", "ae", "higherhrnet", "spm")
COLUMNS = ("decode MB", "maps MB", "process peak MB", "people found", "peak reset")


def peak_mb() -> float:
    """The process's peak RSS so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def reset_peak() -> bool:
    """Set the kernel's peak-RSS mark of this process to its current RSS (Linux); returns whether it could."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(name: str, people: int, input_size: int) -> dict[str, float | int | bool]:
    """The figures of one method (see the module docstring), measured in this process."""
    import torch

    from bottomup.config import build_method
    from bottomup.skeletons import COCO

    sys.path.insert(0, str(ROOT / "tests"))  # the shared test helpers draw plausible people
    from people import crowd

    codec = build_method(name, COCO).codec
    keypoints = torch.from_numpy(crowd(people, input_size))
    maps = {k: v[None] for k, v in codec.ideal_outputs(keypoints, (input_size, input_size)).items()}
    gc.collect()
    setup_peak = peak_mb()
    reset = reset_peak()
    before = peak_mb()
    with torch.inference_mode():
        found = codec.decode(maps)[0]
    after = peak_mb()
    return {"decode MB": after - before, "maps MB": sum(m.numel() * m.element_size() for m in maps.values()) / 2**20,
            "process peak MB": max(setup_peak, after), "people found": len(found), "peak reset": reset}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=30)
    parser.add_argument("--input-size", type=int, default=1024)
    parser.add_argument("--limit-mb", type=float, default=1024.0)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: measure this method, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.people, args.input_size)))
        return
    from bottomup.evaluation.report import format_table  # light: keeps this parent process small

    rows = {}
    for name in args.methods:
        child = subprocess.run([sys.executable, __file__, "--one", name, "--people", str(args.people),
                                "--input-size", str(args.input_size)], capture_output=True, text=True, check=True)
        rows[name] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"Peak memory of decoding one {args.input_size}x{args.input_size} input with {args.people} people "
          f"(one fresh process per method)\n")
    print(format_table(rows, COLUMNS))
    over = [name for name, row in rows.items() if row["decode MB"] > args.limit_mb]
    if over:
        print(f"\nover the {args.limit_mb:.0f} MB limit: {', '.join(over)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
