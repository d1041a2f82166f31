import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite's models are tiny: one thread per op spares the hand-off between
# threads that dominates them on 2 cores (measured: torch 55 s -> 31 s for
# test_callbacks.py, TensorFlow 23 s -> 18 s, JAX 150 s -> 122 s for
# test_search/test_distiller/test_chunked). Set before any backend loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the same seed and a clean global state."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
    # Without the gc.collect() of free_memory=True, which costs up to a
    # second per test on 2 cores; the global state is still reset.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
