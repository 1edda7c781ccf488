"""`make test-fast` leaves out the tests tests/conftest.py names slow: every name there must still be a test
(a renamed test would silently slow the edit loop down again)."""
import importlib.util
import re
from pathlib import Path

HERE = Path(__file__).parent
# tests/conftest.py by its path: "conftest" alone may name tests/gpu/conftest.py
_spec = importlib.util.spec_from_file_location("tests_conftest", HERE / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
SLOW_FILES, SLOW_TESTS = _conftest.SLOW_FILES, _conftest.SLOW_TESTS


def test_every_slow_name_is_a_test():
    defined = {m for f in HERE.rglob("test_*.py") for m in re.findall(r"^def (test_\w+)\(", f.read_text(), re.M)}
    assert SLOW_TESTS <= defined, sorted(SLOW_TESTS - defined)
    assert all((HERE / f).is_file() for f in SLOW_FILES)


def test_make_test_keeps_each_file_on_one_worker():
    """`make test` runs on several pytest-xdist workers; module-scoped fixtures (the smoke book, ~3 min) are
    built once only while a file's tests share a worker (--dist loadfile)."""
    makefile = (HERE.parent / "Makefile").read_text()
    for target in ("test", "test-fast"):
        recipe = re.search(rf"^{target}:.*\n\t(.*)$", makefile, re.M).group(1)
        assert "-n $(TEST_WORKERS) --dist loadfile" in recipe, (target, recipe)
