"""The README's configuration table is the user's manual: every key the code accepts is
documented with the code's default, and every documented key exists."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from fedvault.fl import config as C

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _rows() -> dict[str, str]:
    """``{"section.key": default cell}`` from the table rows ``| `[section] key`, `key2` | default | ... |``."""
    out = {}
    for line in README.splitlines():
        m = re.match(r"\|\s*`(?:\[(\w+)\] )?([\w]+)`((?:,\s*`\w+`)*)\s*\|([^|]*)\|", line)
        if not m:
            continue
        section, first, more, default = m.group(1), m.group(2), m.group(3), m.group(4)
        for key in [first] + re.findall(r"`(\w+)`", more):
            out[f"{section}.{key}" if section else key] = default.strip()
    return out


def _code_keys() -> dict[str, object]:
    cfg = C.Config()
    keys: dict[str, object] = {"seed": cfg.seed}
    for name in C._SECTIONS:
        sec = getattr(cfg, name)
        for f in dataclasses.fields(sec):
            keys[f"{name}.{f.name}"] = getattr(sec, f.name)
    return keys


def _default_ok(value: object, cell: str) -> bool:
    if value is None or value == () or value == "":
        return True  # no default: the cell explains ("—", "derived", ...)
    if isinstance(value, bool):
        return ("true" if value else "false") in cell
    if isinstance(value, (int, float)):
        numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", cell)]
        return any(abs(x - float(value)) <= 1e-12 * max(1.0, abs(float(value))) for x in numbers)
    if isinstance(value, str):
        return f'"{value}"' in cell
    if isinstance(value, tuple):
        return f"[{', '.join(map(str, value))}]" in cell
    return True


def test_every_config_key_is_documented_with_its_default():
    rows = _rows()
    code = _code_keys()
    missing = sorted(k for k in code if k not in rows)
    assert not missing, f"config keys missing from README's table: {missing}"
    wrong = sorted(f"{k}: code {code[k]!r}, README {rows[k]!r}" for k in code if not _default_ok(code[k], rows[k]))
    assert not wrong, "README defaults differ from the code:\n" + "\n".join(wrong)


def test_every_documented_key_exists():
    code = _code_keys()
    stale = sorted(k for k in _rows() if k not in code and "." in k or k == "seed" and k not in code)
    assert not stale, f"README documents keys the code does not accept: {stale}"
