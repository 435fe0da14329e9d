import gc
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

SHARED_DATA = pathlib.Path(
    os.environ.get("KERAS_MM_SHARED_DATA",
                   pathlib.Path(__file__).resolve().parents[2] / "shared"
                   / "data"))


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (setup.cfg): one worker a core, at most 4 (each worker
    loads its own TensorFlow); `KERAS_MM_TEST_WORKERS` sets the number."""
    if os.environ.get("KERAS_MM_TEST_WORKERS"):
        return int(os.environ["KERAS_MM_TEST_WORKERS"])
    return max(1, min(4, len(os.sched_getaffinity(0))))


@pytest.fixture
def shared_data():
    """Path of ../shared/data; skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent; set "
                    "KERAS_MM_SHARED_DATA to its path to run this test")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Float32 policy and a fresh Keras state around every test.

    `clear_session()` without `gc.collect()`: the collection costs 0.3-0.7 s
    a test; one collection per module (below) keeps memory bounded.
    """
    import keras
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_per_module():
    yield
    gc.collect()
