"""Runs that emulate another CPU keep their inductor graphs apart (``tests/conftest.isolate_inductor_cache``)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import isolate_inductor_cache


def test_each_emulation_gets_its_own_inductor_cache_folder():
    avx2 = {"ATEN_CPU_CAPABILITY": "avx2", "PATH": "/bin"}
    folder = isolate_inductor_cache(avx2)
    assert avx2["TORCHINDUCTOR_CACHE_DIR"] == folder and Path(folder).name.endswith("ATEN_CPU_CAPABILITY=avx2")
    capped = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert isolate_inductor_cache(capped) not in (None, folder)  # another setting, another folder
    assert isolate_inductor_cache({"ATEN_CPU_CAPABILITY": "default"}) not in (None, folder)


def test_plain_runs_and_a_chosen_cache_folder_are_left_alone():
    plain = {"PATH": "/bin"}
    assert isolate_inductor_cache(plain) is None and plain == {"PATH": "/bin"}
    chosen = {"ONEDNN_MAX_CPU_ISA": "AVX2", "TORCHINDUCTOR_CACHE_DIR": "/somewhere"}
    assert isolate_inductor_cache(chosen) is None and chosen["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere"
