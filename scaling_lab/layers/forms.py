"""The forms a model is built in, named once: ``training`` (BatchNorm, RepConv branches,
implicit knowledge, auxiliary heads), ``deploy`` (auxiliary heads dropped, every op fused) and
``fused`` (every op fused, auxiliary heads kept)."""

from __future__ import annotations

from typing import Literal, get_args

Form = Literal["training", "deploy", "fused"]
FORMS: tuple[str, ...] = get_args(Form)
FORM_TEXT = {
    "training": "training (unfused)",
    "deploy": "deploy (fused, no auxiliary head)",
    "fused": "fused (auxiliary head kept)",
}
FORM_SUFFIXES = {"deploy": "-deploy", "fused": "-fused"}  # on zoo names: yolov7-deploy
