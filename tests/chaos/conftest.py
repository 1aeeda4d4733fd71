"""The chaos suite (issue 6): prints the table of figures (calls tried / survived per fault)."""

from testbed.figures import FIGURES, table


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("chaos figures (issue 6)")
        terminalreporter.write_line(table())
