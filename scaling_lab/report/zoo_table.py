"""The zoo table: every zoo model profiled, next to the paper's and the reference's counts."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from scaling_lab.analyze.profile import profile
from scaling_lab.models import resolve_spec
from scaling_lab.zoo import list_models

NOTE = """\
Params and GFLOPs of every zoo model, counted analytically on our graphs (GFLOPs = 2 x GMACs,
MACs = conv weight multiply-accumulates + bias adds, the paper's rule; square input of the
size shown; 80 classes). `graph` says which form is compared with the paper: `deploy` = fused
(BatchNorm, RepConv and implicit knowledge folded into convs), auxiliary heads removed, the
form the paper reports; YOLOv7-D6's paper figures (154.7M / 806.8G) are its training graph
with the auxiliary head. YOLOv7-tiny is compared with Table 1 at 416 px (the paper has no
640 px row for it). `train_*` columns: our unfused training graph at the default size, next to
the public reference implementation's count (`ref_train_params_m`). Deltas: ours minus theirs.
"""


def reference_counts() -> pd.DataFrame:
    """The public reference implementation's counts shipped with the package."""
    path = resources.files("scaling_lab.zoo") / "reference" / "public_reference_counts.csv"
    return pd.read_csv(str(path))


def zoo_rows(models: list[str] | None = None) -> pd.DataFrame:
    """One row per zoo model: measured vs paper (Table 1/2) vs reference implementation."""
    refs = reference_counts().set_index(["config", "graph"])
    rows = []
    for name in models or list_models():
        spec = resolve_spec(name)
        paper = spec.reference
        img = int(paper.get("img_size", spec.img_size))
        graph = paper.get("graph", "deploy")
        measured = profile(name, img_size=img, deploy=graph == "deploy")
        train = profile(name, img_size=spec.img_size)
        ref = refs.loc[(name, "training")] if (name, "training") in refs.index else None
        row = {
            "model": name,
            "paper_row": paper.get("paper_row", ""),
            "graph": graph,
            "img_size": img,
            "params_m": round(measured.params_m, 3),
            "paper_params_m": paper.get("params_m"),
            "gflops": round(measured.gflops, 2),
            "paper_gflops": paper.get("gflops"),
            "train_params_m": round(train.params_m, 3),
            "ref_train_params_m": None if ref is None else ref["params_m"],
            "train_gflops": round(train.gflops, 2),
        }
        rows.append(row)
    df = pd.DataFrame(rows)
    df["d_params_m"] = (df["params_m"] - df["paper_params_m"]).round(3)
    df["d_gflops_pct"] = (100 * (df["gflops"] / df["paper_gflops"] - 1)).round(2)
    df["d_train_params_m"] = (df["train_params_m"] - df["ref_train_params_m"]).round(3)
    order = [
        "model",
        "paper_row",
        "graph",
        "img_size",
        "params_m",
        "paper_params_m",
        "d_params_m",
        "gflops",
        "paper_gflops",
        "d_gflops_pct",
        "train_params_m",
        "ref_train_params_m",
        "d_train_params_m",
        "train_gflops",
    ]
    return df[order]


def write_zoo_table(out_dir: str | Path = "reports/zoo") -> tuple[Path, Path]:
    """Write ``table.md`` and ``table.csv``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = zoo_rows()
    csv_path, md_path = out_dir / "table.csv", out_dir / "table.md"
    df.to_csv(csv_path, index=False)
    md_path.write_text(
        "# Zoo: measured vs paper\n\n" + NOTE + "\n" + df.to_markdown(index=False) + "\n"
    )
    return md_path, csv_path
