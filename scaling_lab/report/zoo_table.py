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
size shown; 80 classes), grouped by family: YOLOv7 first, then the baselines of Tables 1-2.
`graph` says which form is compared with the paper: `deploy` = fused (BatchNorm, RepConv and
implicit knowledge folded into convs), auxiliary heads removed, the form the paper reports;
`training` = unfused, where the paper (or the baseline's own paper) counted that form. Notes
below the table say what each paper counted where it differs from our rule. YOLOv7-tiny and
YOLOv4-tiny are compared with Table 1 at 416 px, YOLOv4-tiny-3l at 320 px. `train_*` columns:
our unfused training graph at the default size, next to the public reference implementation's
count (`ref_train_params_m`, YOLOv7 only). Deltas: ours minus theirs.
"""

# Families in the order of the paper's tables; unknown families go last, alphabetically.
FAMILY_ORDER = ("YOLOv7", "YOLOv4", "YOLOR", "YOLOv5", "YOLOX", "PP-YOLOE")


def reference_counts() -> pd.DataFrame:
    """The public reference implementation's counts shipped with the package."""
    path = resources.files("scaling_lab.zoo") / "published" / "public_reference_counts.csv"
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
            "family": spec.family,
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
            "counted": " ".join(str(paper.get("counted", "")).split()),
        }
        rows.append(row)
    df = pd.DataFrame(rows)
    rank = {family: i for i, family in enumerate(FAMILY_ORDER)}
    df["_rank"] = [(rank.get(f, len(rank)), f) for f in df["family"]]
    df = df.sort_values(["_rank", "img_size", "paper_gflops", "model"], kind="stable")
    df["d_params_m"] = (df["params_m"] - df["paper_params_m"]).round(3)
    df["d_gflops_pct"] = (100 * (df["gflops"] / df["paper_gflops"] - 1)).round(2)
    df["d_train_params_m"] = (df["train_params_m"] - df["ref_train_params_m"]).round(3)
    order = [
        "family",
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
        "counted",
    ]
    return df[order].reset_index(drop=True)


def _notes(df: pd.DataFrame) -> str:
    """What each paper counted, where it differs from our rule (one line per model)."""
    lines = [f"- `{r.model}` ({r.paper_row}): {r.counted}" for r in df.itertuples() if r.counted]
    if not lines:
        return ""
    return "\n## What the papers counted\n\n" + "\n".join(lines) + "\n"


def write_zoo_table(out_dir: str | Path = "reports/zoo") -> tuple[Path, Path]:
    """Write ``table.md`` and ``table.csv``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = zoo_rows()
    csv_path, md_path = out_dir / "table.csv", out_dir / "table.md"
    df.to_csv(csv_path, index=False)
    table = df.drop(columns="counted").to_markdown(index=False)
    md_path.write_text("# Zoo: measured vs paper\n\n" + NOTE + "\n" + table + "\n" + _notes(df))
    return md_path, csv_path
