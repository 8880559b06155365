"""The backend switch (tinyphi3.backends): a registry another package can add kernels to, and
global state that is set when it is first needed, not when tinyphi3 is imported."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tinyphi3 import backends
from tinyphi3.nn.layers import rms_norm


def run_python(code, **env):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("TINYPHI3_BACKEND", "OMP_WAIT_POLICY", "NUMBA_CPU_FEATURES",
                                 "GOMP_SPINCOUNT", "GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_",
                                 "MALLOC_TRIM_THRESHOLD_")}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_another_package_can_register_a_backend(monkeypatch):
    """What tinyphi3_gpu does for CuPy arrays, done here for float64 NumPy arrays: the layer asks
    the switch, and the registered kernel runs for the arrays it accepts, the reference else."""
    calls = []

    def doubled_rms_norm(x, weight, eps):
        calls.append(x.dtype)
        return 2 * x

    plug_in = backends.Backend(
        "float64-test", accepts=lambda arrays: all(a.dtype == np.float64 for a in arrays),
        load=lambda: {"rms_norm": doubled_rms_norm})
    monkeypatch.setitem(backends._REGISTRY, plug_in.name, plug_in)
    x, w = np.ones((2, 4)), np.ones(4)
    with backends.use_backend("float64-test"):
        assert np.array_equal(rms_norm(x, w, 1e-5), 2 * x)                     # the kernel
        reference = rms_norm(x.astype(np.float32), w.astype(np.float32), 1e-5)  # not accepted
        assert backends.kernel("softmax_backward_", x) is None                  # not provided
    assert calls == [np.float64]
    np.testing.assert_allclose(reference, np.full((2, 4), 1 / np.sqrt(1 + 1e-5)), rtol=1e-6)
    assert backends.get_backend() != "float64-test"                   # the block restored it


def test_a_backend_that_cannot_run_says_why(monkeypatch):
    absent = backends.Backend("absent-test", missing=lambda: "its package is not installed")
    monkeypatch.setitem(backends._REGISTRY, absent.name, absent)
    with pytest.raises(backends.BackendError, match="cannot run here: its package is not"):
        backends.set_backend("absent-test")
    with pytest.raises(backends.BackendError, match="unknown backend 'nope'"):
        backends.set_backend("nope")


def test_the_environment_chooses_the_backend_when_first_asked():
    assert run_python("from tinyphi3 import backends; print(backends.get_backend())",
                      TINYPHI3_BACKEND="numpy") == "numpy"
    assert run_python("from tinyphi3 import backends; print(backends.get_backend())") == "numba"


def test_numpy_loads_its_blas_with_sleeping_threads_when_tinyphi3_comes_first():
    """OPENBLAS_THREAD_TIMEOUT is 4 while NumPy (and its OpenBLAS, which reads it then) loads,
    and gone afterwards; a value the user set, or NumPy loaded before tinyphi3, is left alone."""
    code = ("import os, sys; seen = []; "
            "sys.addaudithook(lambda event, args: seen.append(os.environ.get("
            "'OPENBLAS_THREAD_TIMEOUT')) if event == 'import' and args[0] == 'numpy' else None); "
            "{first}import tinyphi3; print(seen[0], os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    for first, env, expected in (("", {}, "4 None"), ("", {"OPENBLAS_THREAD_TIMEOUT": "20"},
                                                       "20 20"),
                                 ("import numpy; ", {}, "None None")):
        result = subprocess.run([sys.executable, "-c", code.format(first=first)],
                                capture_output=True, text=True, env={**clean, **env}, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected, (first, env)


def test_a_4_bit_model_lets_numbas_threads_spin_briefly_unless_the_user_chose(tmp_path):
    """Loading a 4-bit checkpoint (before Numba starts its threads) sets OMP_WAIT_POLICY=ACTIVE
    with GOMP_SPINCOUNT=5000, for decoding's many short parallel loops; a float model keeps
    sleeping threads, and so does a policy the user set. The 4-bit model also has glibc's malloc
    keep large blocks for reuse, unless the user tuned malloc."""
    from pathlib import Path
    from tinyphi3.models.quantize import quantize_checkpoint
    mini = Path(__file__).resolve().parents[1] / "checkpoints" / "mini"
    quantize_checkpoint(mini, tmp_path / "q4", 32, progress=False)
    code = ("import os, tinyphi3; m = tinyphi3.Phi3.from_pretrained({path!r}); "
            "m(__import__('numpy').array([[1, 2]])); "
            "from tinyphi3.backends import numba as nb; "
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), "
            "bool(nb._MALLOC_TUNED))")
    q4 = str(tmp_path / "q4")
    assert run_python(code.format(path=q4)) == "ACTIVE 5000 True"
    assert run_python(code.format(path=str(mini))) == "PASSIVE None False"
    assert run_python(code.format(path=q4), OMP_WAIT_POLICY="PASSIVE") == "PASSIVE None True"
    assert run_python(code.format(path=q4), GLIBC_TUNABLES="glibc.malloc.trim_threshold=0") == (
        "ACTIVE 5000 False")                            # the user's malloc settings stand


def test_importing_tinyphi3_sets_no_environment_variable():
    """Numba's thread policy is set when its kernels are first loaded, not at import."""
    code = ("import os, tinyphi3, numpy as np; "
            "before = os.environ.get('OMP_WAIT_POLICY'); "
            "tinyphi3.Phi3(tinyphi3.preset('tiny'))(np.array([[1, 2]])); "
            "print(before, os.environ.get('OMP_WAIT_POLICY'))")
    assert run_python(code) == "None PASSIVE"


def test_stale_machine_code_is_forgotten_when_an_inlined_file_changes(tmp_path, monkeypatch):
    """A cached kernel that inlines a function of another file must not outlive an edit of that
    file (Numba checks only the kernel's own file): the stamp of both files empties its cache."""
    import importlib
    import os

    from tinyphi3.backends.numba import forget_stale_machine_code
    package = tmp_path / "stalepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text(
        "from numba import njit\n@njit(inline='always')\ndef twice(x):\n    return 2 * x\n")
    (package / "kernel.py").write_text(
        "from numba import njit\nfrom stalepkg.helper import twice\n"
        "@njit(cache=True)\ndef apply(x):\n    return twice(x) + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    helper = importlib.import_module("stalepkg.helper")
    kernel = importlib.import_module("stalepkg.kernel")
    assert forget_stale_machine_code((helper, kernel))             # no stamp yet
    assert kernel.apply(3) == 7                                    # compiled and cached
    index = kernel.apply._cache._cache_file
    assert index._load_index()                                     # one overload on disk
    assert not forget_stale_machine_code((helper, kernel))         # nothing changed
    assert index._load_index()
    stat = os.stat(helper.__file__)
    os.utime(helper.__file__, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))   # helper edited
    assert forget_stale_machine_code((helper, kernel))
    assert index._load_index() == {}                               # the kernel recompiles
