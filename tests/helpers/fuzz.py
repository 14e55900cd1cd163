"""What every fuzz case shares: the CLI run in-process, the one-line verdict, the sandbox
that every case writes into, and the mutations applied to valid inputs."""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from scaling_lab.cli import main


class AcceptedError(Exception):
    """Raised where a sweep that passed every check would start Ray (the fuzz stops there)."""


@dataclass
class Outcome:
    status: int | None  # None: the sweep was accepted (it would start Ray now)
    stdout: str
    stderr: str


def lab(*argv: str) -> Outcome:
    """``lab ARGV`` in this process; an exception other than a user error propagates, so a
    traceback fails the test with its own stack."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status: int | None = main(list(argv))
        except SystemExit as exc:  # argparse
            status = exc.code if isinstance(exc.code, int) else 2
        except AcceptedError:
            status = None
    return Outcome(status, out.getvalue(), err.getvalue())


def assert_one_line(result: Outcome, *, may_succeed: bool = True) -> None:
    """Refused as the README promises (exit 2, one line naming the problem, no traceback);
    or, where the input may still be valid, accepted."""
    if may_succeed and result.status in (0, None):
        return
    assert result.status == 2, f"exit {result.status}: {result.stderr!r}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"not one line: {result.stderr!r}"
    assert re.match(r"^lab [a-z -]+: error: \S", lines[0]), lines[0]
    assert "Traceback" not in result.stderr


def snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# --- mutations of valid text ----------------------------------------------------------

NASTY_YAML = [
    "-1", "0", "1e308", ".nan", ".inf", "-.inf", "[]", "{}", "''", "x", "~", "true",
    "100000000", "123456789012345678901234567890", "*undefined", "&a 1", "[*a]",
    "!!python/object/apply:os.system [echo]", "!!binary aGk=", "2020-01-01", "\"\\0\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "{a: {b: {c: {d: 1}}}}", "[1, 2", "{", "}", "'unterminated", "|\n  block", "<<: {}",
    "../../x", "/dev/zero", "__lines__", "input", "scale", "é€𝄞", "\t",
]  # fmt: skip

nasty_value = st.one_of(
    st.sampled_from(NASTY_YAML),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12).map(lambda t: '"' + t.replace("\\", "").replace('"', "") + '"'),
)

_VALUE = re.compile(r"(?<=: )[^,{}\[\]\n]+|(?<=: )\[[^\]\n]*\]")


@st.composite
def mutated(draw: st.DrawFn, text: str, max_steps: int = 3) -> bytes:
    """``text`` after a few edits: a value replaced with a hostile one, lines deleted,
    duplicated or swapped, garbage inserted, the file cut short, bytes that are not UTF-8."""
    for _ in range(draw(st.integers(1, max_steps))):
        kind = draw(st.sampled_from(["value", "value", "value", "delete", "dup", "insert", "cut"]))
        lines = text.splitlines(keepends=True)
        if kind == "value":
            spots = list(_VALUE.finditer(text))
            if spots:
                m = draw(st.sampled_from(spots))
                text = text[: m.start()] + draw(nasty_value) + text[m.end() :]
        elif kind == "delete" and lines:
            i = draw(st.integers(0, len(lines) - 1))
            text = "".join(lines[:i] + lines[i + 1 :])
        elif kind == "dup" and lines:
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines)))
            text = "".join([*lines[:j], lines[i], *lines[j:]])
        elif kind == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.one_of(nasty_value, st.text(max_size=8))) + text[at:]
        elif kind == "cut":
            text = text[: draw(st.integers(0, len(text)))]
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 15)) == 15:  # now and then bytes that are not UTF-8
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80"]))
            + data[at:]
        )
    return data
