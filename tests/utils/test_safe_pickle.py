"""The restricted unpickler reads plain data (numpy arrays included) and refuses pickles that would run code."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from dinov2.utils import safe_pickle


class _RunsCode:
    def __reduce__(self):  # what a malicious pickle does: call os.system while loading
        return (os.system, ("echo unpickled > pwned.txt",))


def _gnd_like():
    return {
        "imlist": ["all_souls_000013", "oxford_002985"],
        "qimlist": ["all_souls_000013"],
        "gnd": [
            {
                "easy": np.array([1]),
                "hard": np.array([], dtype=np.int64),
                "junk": [np.int64(0)],
                "bbx": np.array([136.5, 34.1, 648.0, 955.2]),
            }
        ],
        "extras": ({1, 2}, frozenset([3]), b"bytes", 1.5, 2 + 1j, None, True),
    }


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_reads_a_ground_truth_like_pickle(protocol, tmp_path):
    path = tmp_path / "gnd.pkl"
    path.write_bytes(pickle.dumps(_gnd_like(), protocol=protocol))
    loaded = safe_pickle.load(path)
    expected = _gnd_like()
    assert loaded["imlist"] == expected["imlist"] and loaded["extras"] == expected["extras"]
    entry = loaded["gnd"][0]
    assert isinstance(entry["easy"], np.ndarray) and entry["easy"].tolist() == [1]
    assert entry["bbx"].dtype == np.float64 and np.array_equal(entry["bbx"], expected["gnd"][0]["bbx"])
    assert entry["junk"] == [0] and entry["hard"].dtype == np.int64


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_refuses_a_pickle_that_would_run_code(protocol, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = pickle.dumps({"gnd": [_RunsCode()]}, protocol=protocol)
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"system.*not plain data"):
        safe_pickle.loads(data)
    assert not (tmp_path / "pwned.txt").exists()


def test_refuses_other_globals_and_persistent_ids():
    with pytest.raises(safe_pickle.UnsafePickleError, match="builtins.eval"):
        safe_pickle.loads(b"cbuiltins\neval\n(S'1'\ntR.")
    with pytest.raises(safe_pickle.UnsafePickleError, match="persistent"):
        safe_pickle.loads(b"P0\n.")


@pytest.mark.parametrize(
    "data",
    [b"", pickle.dumps(_gnd_like())[:40], b"garbage\n", b"<!DOCTYPE html><html>rate limited</html>"],
    ids=["empty", "truncated", "text", "html"],
)
def test_a_file_that_is_not_a_whole_pickle_is_named(data, tmp_path):
    path = tmp_path / "gnd_roxford5k.pkl"
    path.write_bytes(data)
    with pytest.raises(safe_pickle.NotAPickleError, match=r"gnd_roxford5k.pkl' is not a readable pickle.*again"):
        safe_pickle.load(path)
    with pytest.raises(ValueError, match="the pickle is not a readable pickle"):  # a ValueError, as callers expect
        safe_pickle.loads(data)
