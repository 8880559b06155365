"""Timing for the lessons: the median wall time of a few calls (timings are printed, never
checked)."""
import statistics
import time


def median_seconds(fn, runs=3):
    """Median seconds of `runs` calls of fn()."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
