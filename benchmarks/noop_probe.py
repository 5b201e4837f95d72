"""A probe that does nothing, for bench_probe.py: what runs in the sandbox is this module alone."""


def returns_one(sub: object) -> int:
    return 1
