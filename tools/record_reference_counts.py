"""Record the public reference implementation's parameter count of every model config.

Run with the reference's own Python environment, against a checkout of it::

    /work/ref_venv/bin/python tools/record_reference_counts.py \
        --reference /work/reference_yolov7 --out tests/fixtures/reference_config_params.csv

Every ``cfg/**/*.yaml`` is built with the reference's ``models.yolo.Model`` (80 classes, 3
input channels, its default) and its learnable parameters are summed. The CSV is what
``tests/spec/test_layer_list.py`` compares the importer with; the tests never need the
reference itself. This script does not import scaling_lab.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import sys
from pathlib import Path

from reference_checkout import reference_commit


def _commit(reference: Path) -> str:
    commit = reference_commit(reference)
    return f"commit {commit}" if commit else "a checkout without git history"


def count_configs(reference: Path) -> list[tuple[str, int]]:
    """(config path relative to cfg/, parameter count) for every config, sorted by path."""
    sys.path.insert(0, str(reference))
    cwd = os.getcwd()
    os.chdir(reference)  # the reference resolves some paths against its own root
    try:
        from models.yolo import Model  # the reference's model builder

        rows = []
        for path in sorted(Path("cfg").rglob("*.yaml")):
            with contextlib.redirect_stdout(io.StringIO()):
                model = Model(str(path))
            params = sum(p.numel() for p in model.parameters())
            rows.append((path.relative_to("cfg").as_posix(), params))
        return rows
    finally:
        os.chdir(cwd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="reference checkout")
    parser.add_argument("--out", type=Path, default=None, help="CSV to write (default: stdout)")
    args = parser.parse_args(argv)
    reference = args.reference.resolve()
    out_path = args.out.resolve() if args.out else None
    rows = count_configs(reference)
    buffer = io.StringIO()
    buffer.write(
        "# Parameter counts of the public reference implementation (WongKinYiu/yolov7, "
        f"{_commit(reference)}):\n"
        "# models.yolo.Model(cfg/<config>), 80 classes, sum of parameters' numel.\n"
        "# Recorded by tools/record_reference_counts.py.\n"
    )
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["config", "params"])
    writer.writerows(rows)
    if out_path is None:
        sys.stdout.write(buffer.getvalue())
    else:
        out_path.write_text(buffer.getvalue())
        print(f"wrote {len(rows)} configs to {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
