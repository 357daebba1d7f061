"""faultlab._workers: kernels warmed once, memory left as it was."""

from __future__ import annotations

from faultlab import _kernels
from faultlab._workers import warm_kernels


def test_warm_kernels_loads_every_kernel_and_is_cheap_the_second_time():
    warm_kernels()
    for name in _kernels.__all__:
        fn = getattr(_kernels, name)
        if hasattr(fn, "signatures"):
            assert fn.signatures, name  # compiled or loaded from the cache
    assert warm_kernels() < 0.05  # nothing left to load
