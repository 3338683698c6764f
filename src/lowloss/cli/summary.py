"""The line a person reads when a command succeeds (stderr); scripts read the JSON line on stdout."""

from __future__ import annotations

OUT_KEYS = ("out", "out_dir")
LEFT_OUT = {"files", "seconds", "fit_seconds", "build_seconds", "evaluate_seconds", "match_seconds"}


def human_summary(command: str, summary: dict, seconds: float) -> str:
    """`lowloss train: done in 3.2 s, wrote m.safetensors · train acc 99.3 % · test acc 95.6 % · epochs 20`.

    Accuracies (fractions in the summary) are shown in percent; lists, tables and timings of parts
    are left to the JSON line.
    """
    head = f"lowloss {command}: done in {seconds:.1f} s"
    written = [str(summary[key]) for key in OUT_KEYS if summary.get(key)]
    if written:
        head += f", wrote {', '.join(written)}"
    items = [
        _item(key, value)
        for key, value in summary.items()
        if key not in OUT_KEYS and key not in LEFT_OUT and not isinstance(value, (dict, list))
    ]
    return " · ".join([head, *items])


def _item(key: str, value) -> str:
    label = key.replace("_", " ")
    if key.endswith("_acc") and isinstance(value, float):
        return f"{label} {100 * value:.2f} %"
    if isinstance(value, float):
        return f"{label} {value:.4g}"
    return f"{label} {value}"
