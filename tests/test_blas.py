"""vaesdk.base.blas.one_blas_thread: numpy's BLAS on one thread inside, the previous limits
back after the last of overlapping holders leaves, from any thread."""

import threading

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from vaesdk.base.blas import one_blas_thread


def blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_one_thread_inside_and_the_limits_back_after():
    np.ones((4, 4)) @ np.ones((4, 4))  # numpy's BLAS is loaded
    with threadpool_limits(limits=3, user_api="blas"):
        assert blas_threads() and set(blas_threads()) == {3}
        with one_blas_thread():
            assert set(blas_threads()) == {1}
            with one_blas_thread():
                assert set(blas_threads()) == {1}
            assert set(blas_threads()) == {1}  # the outer holder still holds it
        assert set(blas_threads()) == {3}


def test_a_holder_in_another_thread_leaving_does_not_restore_the_limits_early():
    # BLAS's thread count is read here in the main thread, where numpy's products run threaded.
    with threadpool_limits(limits=3, user_api="blas"):
        with one_blas_thread():
            worker = threading.Thread(target=_hold_and_leave)
            worker.start()
            worker.join(10)
            assert set(blas_threads()) == {1}  # the other holder left; this one still holds
        assert set(blas_threads()) == {3}


def _hold_and_leave():
    with one_blas_thread():
        np.ones((4, 4)) @ np.ones((4, 4))


def test_an_error_inside_still_restores():
    with threadpool_limits(limits=3, user_api="blas"):
        try:
            with one_blas_thread():
                raise ValueError("inside")
        except ValueError:
            pass
        assert set(blas_threads()) == {3}
