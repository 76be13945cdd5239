"""utils.environ: sets and unsets variables for a block and restores them, also when the block raises."""
import os

import pytest

from medvlp_lib.utils import environ


def test_environ_sets_unsets_and_restores(monkeypatch):
    monkeypatch.setenv("MEDVLP_T_A", "old")
    monkeypatch.delenv("MEDVLP_T_B", raising=False)
    with environ(MEDVLP_T_A=None, MEDVLP_T_B="new"):
        assert "MEDVLP_T_A" not in os.environ
        assert os.environ["MEDVLP_T_B"] == "new"
    assert os.environ["MEDVLP_T_A"] == "old"
    assert "MEDVLP_T_B" not in os.environ


def test_environ_restores_after_an_error(monkeypatch):
    monkeypatch.setenv("MEDVLP_T_A", "old")
    with pytest.raises(RuntimeError), environ(MEDVLP_T_A="tmp"):
        assert os.environ["MEDVLP_T_A"] == "tmp"
        raise RuntimeError("boom")
    assert os.environ["MEDVLP_T_A"] == "old"
