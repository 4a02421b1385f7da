"""Whether the repository was tuned on another CPU than the one ``dnx bench`` runs on (pure)."""

from __future__ import annotations

from dnx.manifest import Manifest


def _isa(m: dict) -> list[str]:
    return sorted(m.get("isa") or [])


def tuned_elsewhere(manifest: Manifest | None, machine: dict) -> str | None:
    """A one-line warning when ``manifest``'s ``tuning.machine`` (``dnx tune``) names another CPU model
    or other ISA flags than ``machine`` (:func:`dnx.perf.results.machine_info`); else None."""
    tuned = ((manifest.extra.get("tuning") if manifest is not None else None) or {}).get("machine")
    if not isinstance(tuned, dict) or not tuned.get("cpu"):
        return None
    if tuned.get("cpu") == machine.get("cpu") and _isa(tuned) == _isa(machine):
        return None
    words = lambda m: f"{m.get('cpu')} ({', '.join(_isa(m)) or 'no ISA flags recorded'})"  # noqa: E731
    gone, new = sorted(set(_isa(tuned)) - set(_isa(machine))), sorted(set(_isa(machine)) - set(_isa(tuned)))
    diff = "; ".join(x for x in (f"missing here: {', '.join(gone)}" if gone else "",
                                 f"new here: {', '.join(new)}" if new else "") if x)
    return (f"the repository was tuned on {words(tuned)}, this machine is {words(machine)}"
            + (f" [{diff}]" if diff else "") + ": its configs may not be the fastest here; rerun `dnx tune` on this machine")
