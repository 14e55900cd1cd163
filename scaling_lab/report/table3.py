"""Table 3 (paper §5.4.1): the scaling ablation rebuilt from ``yolov7x-base`` with ``scale``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from scaling_lab.analyze.complexity import count_graph
from scaling_lab.graph.block_graph import BlockGraph
from scaling_lab.models import get_block_graph, get_layer_graph
from scaling_lab.transforms.scale import scale

BASE_MODEL = "yolov7x-base"

# (paper row, how our graph is made from the base, scale() arguments; None: the base itself)
ROWS: tuple[tuple[str, str, dict | None], ...] = (
    ("base (v7-X light)", "yolov7x-base", None),
    ("width only (1.25 w)", "scale(width=1.25, mode='width')", {"width": 1.25, "mode": "width"}),
    ("depth only (2.0 d)", "scale(depth=2.0, mode='depth')", {"depth": 2.0, "mode": "depth"}),
    ("compound (v7-X)", "scale(depth=1.5, width=1.25)", {"depth": 1.5, "width": 1.25}),
)

NOTE = """\
Table 3 of the paper (model-scaling ablation), rebuilt: the base is the zoo's `yolov7x-base`
(YOLOv7 with YOLOv7-X's stack-scaled neck, unscaled), and each other row is
`scaling_lab.transforms.scale` applied to it. Counts are analytic on the deploy graph (fused,
80 classes, 640 px); GFLOPs = 2 x GMACs. Deltas: ours minus the paper's (params in M, GFLOPs
in %). The compound row has the same layers and shapes as the zoo's `yolov7x`.
"""


def paper_rows() -> pd.DataFrame:
    """Table 3 as printed in the paper (shipped with the package), indexed by row label."""
    path = resources.files("scaling_lab.zoo") / "reference" / "paper_ablations.csv"
    table = pd.read_csv(str(path))
    return table[table["table"] == 3].set_index("row")


def table3_graphs(base: BlockGraph | None = None) -> dict[str, BlockGraph]:
    """The four graphs of Table 3, keyed by the paper's row label."""
    base = get_block_graph(BASE_MODEL) if base is None else base
    return {row: base if args is None else scale(base, **args) for row, _, args in ROWS}


def table3_rows() -> pd.DataFrame:
    """One row per Table 3 entry: our params/GFLOPs next to the paper's."""
    paper = paper_rows()
    graphs = table3_graphs()
    rows = []
    for label, made_by, _ in ROWS:
        counted = count_graph(get_layer_graph(graphs[label], deploy=True))
        rows.append(
            {
                "row": label,
                "graph": made_by,
                "params_m": round(counted.params_m, 3),
                "paper_params_m": float(paper.loc[label, "params_m"]),
                "gflops": round(counted.gflops, 2),
                "paper_gflops": float(paper.loc[label, "gflops"]),
            }
        )
    df = pd.DataFrame(rows)
    df["d_params_m"] = (df["params_m"] - df["paper_params_m"]).round(3)
    df["d_gflops_pct"] = (100 * (df["gflops"] / df["paper_gflops"] - 1)).round(2)
    order = ["row", "graph", "params_m", "paper_params_m", "d_params_m"]
    return df[[*order, "gflops", "paper_gflops", "d_gflops_pct"]]


def write_table3(out_dir: str | Path = "reports/table3") -> tuple[Path, Path]:
    """Write ``table.md`` and ``table.csv``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = table3_rows()
    csv_path, md_path = out_dir / "table.csv", out_dir / "table.md"
    df.to_csv(csv_path, index=False)
    md_path.write_text(
        "# Table 3: model scaling, measured vs paper\n\n"
        + NOTE
        + "\n"
        + df.to_markdown(index=False)
        + "\n"
    )
    return md_path, csv_path


if __name__ == "__main__":
    for path in write_table3():
        print(path)
