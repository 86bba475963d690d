"""The fault suite's outcome per fault and database, printed as a table at the end of the pytest run."""

from __future__ import annotations

FAULTS: dict[str, tuple[str, ...]] = {
    "SIGKILL at random statements": ("sqlite", "postgresql", "mariadb"),
    "work session terminated": ("postgresql", "mariadb"),
    "disk full": ("sqlite",),
    "table lock held (lock timeout)": ("sqlite", "postgresql", "mariadb"),
    "lock clock aged (heartbeat)": ("sqlite",),
    "concurrent second run": ("sqlite", "postgresql", "mariadb"),
}
DIALECTS = ("sqlite", "postgresql", "mariadb")
RESULTS: dict[tuple[str, str], str] = {}


def record(fault: str, dialect: str, outcome: str) -> None:
    assert fault in FAULTS, fault
    RESULTS[(fault, dialect)] = outcome


def table() -> list[str]:
    """Faults x databases; "n/a" where the fault cannot happen on that database."""
    width = max(len(f) for f in FAULTS)
    cells = {
        (f, d): RESULTS.get((f, d), "not run") if d in applies else "n/a"
        for f, applies in FAULTS.items()
        for d in DIALECTS
    }
    column = max(14, *(len(c) for c in cells.values()))
    lines = [f"{'fault':<{width}} | " + " | ".join(f"{d:<{column}}" for d in DIALECTS)]
    lines.append("-" * width + "-|-" + "-|-".join("-" * column for _ in DIALECTS))
    for fault in FAULTS:
        lines.append(f"{fault:<{width}} | " + " | ".join(f"{cells[(fault, d)]:<{column}}" for d in DIALECTS))
    return lines
