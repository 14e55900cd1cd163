"""Record the reference implementation's training hyper-parameter files as a test fixture.

Run against a checkout of it::

    .venv/bin/python tools/record_reference_hyp.py \
        --reference /work/reference_yolov7 --out tests/fixtures/reference_hyp.json

Reads ``data/hyp.scratch.{tiny,p5,p6}.yaml`` (every key and value, nothing else) so that
``tests/data/test_recipe.py`` can check, without the reference, that our recipe holds the same
values and that every key of those files is read by something.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from reference_checkout import reference_commit

SIZES = ("tiny", "p5", "p6")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    files = {}
    for size in SIZES:
        path = args.reference / "data" / f"hyp.scratch.{size}.yaml"
        files[size] = yaml.safe_load(path.read_text())
    record = {
        "source": f"WongKinYiu/yolov7 data/hyp.scratch.{{{','.join(SIZES)}}}.yaml",
        "commit": reference_commit(args.reference),
        "files": files,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}: {', '.join(f'{s} ({len(files[s])} keys)' for s in SIZES)}")


if __name__ == "__main__":
    main()
