"""Every page shows the numbers it showed when it read the whole store into pandas: a stored
reference (tests/app/data/pages_20k.json.gz, made by tests/app/_snapshot.py with that code on a
seeded 20,000-row store) against the pages that ask the store for sums and narrow reads."""

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from app._demo import seed_store
from hwlab.store import Store

_spec = importlib.util.spec_from_file_location("_snapshot", Path(__file__).with_name("_snapshot.py"))
snap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(snap)
REFERENCE = Path(__file__).parent / "data" / "pages_20k.json.gz"


@pytest.fixture(scope="module")
def reference():
    with gzip.open(REFERENCE, "rt") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def store_20k(tmp_path_factory, reference):
    path = tmp_path_factory.mktemp("ref") / "hwlab.sqlite"
    seed_store(Store(path), n_rows=reference["n_rows"])
    return str(path)


@pytest.mark.parametrize("page", snap.PAGES)
def test_page_numbers_equal_the_stored_reference(page, reference, store_20k, monkeypatch):
    from app import _queries as q

    monkeypatch.setenv("HWLAB_STORE", store_20k)
    q.clear()
    got = snap.numbers(snap.render(page))
    assert got["charts"], f"{page} drew no chart"
    problems = snap.diff(reference["pages"][page], got)
    assert not problems, problems[:10]
