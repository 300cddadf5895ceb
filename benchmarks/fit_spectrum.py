"""Fit the power law behind featviz.param.maco's default magnitude spectrum.

Prints the mean magnitude spectrum's fit ``A_c / f ** e_c`` per decorrelated colour channel for
a folder of photos (default: the project's sample photos), the numbers written as constants in
``featviz/param/spectrum.py``.

    python benchmarks/fit_spectrum.py [--images DIR] [--size 224]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from featviz.param import spectrum

SHARED = Path(os.environ.get("FEATVIZ_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default=str(SHARED / "images"))
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args(argv)
    amplitude, exponent = spectrum.fit_power_law(spectrum.mean_spectrum(args.images, args.size))
    print(f"AMPLITUDE = ({', '.join(f'{a:.4g}' for a in amplitude)})")
    print(f"EXPONENT = ({', '.join(f'{e:.4g}' for e in exponent)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
