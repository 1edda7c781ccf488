"""`make test-fast` leaves out the tests tests/conftest.py names slow: every name there must still be a test
(a renamed test would silently slow the edit loop down again)."""
import re
from pathlib import Path

from conftest import SLOW_FILES, SLOW_TESTS

HERE = Path(__file__).parent


def test_every_slow_name_is_a_test():
    defined = {m for f in HERE.rglob("test_*.py") for m in re.findall(r"^def (test_\w+)\(", f.read_text(), re.M)}
    assert SLOW_TESTS <= defined, sorted(SLOW_TESTS - defined)
    assert all((HERE / f).is_file() for f in SLOW_FILES)
