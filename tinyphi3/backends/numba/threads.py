"""Numba's thread count, per call: small kernels run on the calling thread alone.

Numba's threads sleep between kernels (tinyphi3/backends/numba/__init__.py says why), and waking
one costs about 60 microseconds here: more than a row-wise kernel on one token's activations
takes in all.
"""

SERIAL_BELOW = 1 << 16                 # elements: smaller calls run on one thread


class threads_for:
    """`with threads_for(size):` runs the Numba kernels called inside on one thread when `size`
    elements are too few to be worth waking the others. (A class, not a generator: it is
    entered a few hundred times per generated token.)"""

    __slots__ = ("serial", "saved")

    def __init__(self, size: int):
        self.serial = size < SERIAL_BELOW

    def __enter__(self):
        if self.serial:
            get, put = _thread_count()
            self.saved = get()
            put(1)

    def __exit__(self, *exc):
        if self.serial:
            _thread_count()[1](self.saved)


_THREAD_COUNT = []


def _thread_count():
    """(get, set) of Numba's thread count for the calling thread: the functions behind
    numba.get_num_threads and numba.set_num_threads, without their checks."""
    if not _THREAD_COUNT:
        import numba
        from numba.np.ufunc import parallel
        numba.get_num_threads()                         # starts the pool, binds the functions
        _THREAD_COUNT.extend((getattr(parallel, "_get_num_threads", numba.get_num_threads),
                              getattr(parallel, "_set_num_threads", numba.set_num_threads)))
    return _THREAD_COUNT
