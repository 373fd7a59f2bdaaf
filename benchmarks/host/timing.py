"""Interleaved timing for the host reports: every file once per round, each thread count and cache regime in
a phase of its own, so that ratios come from one run and a 2-thread run's spinning workers never slow the
1-thread run after it."""

import dataclasses

from benchmarks.bench import benchmark
from benchmarks.runtime import RuntimeUnavailable

# Written before every run in the "evicted" regime: more than this server's 480 MB L3, as a phone's few MB of
# cache keep no model between runs.
EVICT_MB = 512


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How a host report times its files: ``rounds`` rounds of every file, ``num_runs`` timed runs each after
    ``warmup_runs``, each thread count and cache regime ("warm", "evicted") in a phase of its own."""

    rounds: int = 3
    num_runs: int = 20
    threads: tuple = (1,)
    caches: tuple = ("warm",)
    warmup_runs: int = 2

    def __post_init__(self):
        object.__setattr__(self, "threads", tuple(dict.fromkeys(self.threads)))  # each count once, in order
        object.__setattr__(self, "caches", tuple(self.caches))


def interleaved(jobs, schedule, options=None):
    """{(key, threads, cache): [per-round medians, ms]} for ``jobs`` [(key, path)], timed by ``schedule``.

    ``options(key)`` gives extra ``benchmark`` keywords per job (a runtime, a precision); the default times
    every file on ai-edge-litert's Interpreter with XNNPACK."""
    times, fp16_checked = {}, set()
    s = schedule
    for cache in s.caches:
        for t in s.threads:
            for _ in range(s.rounds):
                for key, path in jobs:
                    kwargs = {"runtime": "litert", **(options(key) if options else {})}
                    # An FP16 run is checked against float32 reference kernels the first time a file runs
                    # (a forced run that did not compute in FP16 fails there); the same file need not be again.
                    kwargs["check_fp16"] = path not in fp16_checked
                    fp16_checked.add(path)
                    r = benchmark(path, num_threads=t, warmup_runs=s.warmup_runs, num_runs=s.num_runs, min_secs=0,
                                  progress=False, evict_cache_mb=EVICT_MB if cache == "evicted" else 0, **kwargs)
                    if r["wrong_numbers"]:  # an FP16 run past FP16's rounding: no figure for a report
                        raise RuntimeUnavailable(r["wrong_numbers"])
                    times.setdefault((key, t, cache), []).append(r["median_ms"])
    return times


def fmt_spread(s, digits=2):
    """A ``benchmarks.bench.spread`` for a table: 'median (min-max)' in ms."""
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"
