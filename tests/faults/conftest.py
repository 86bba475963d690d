"""The fault suite prints its table of faults x databases after the test summary (also under -q)."""

from __future__ import annotations

from typing import Any

from faults import report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not report.RESULTS:
        return
    terminalreporter.section("fault suite: differences from the golden run")
    for line in report.table():
        terminalreporter.write_line(line)
