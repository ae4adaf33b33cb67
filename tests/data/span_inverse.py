"""The inverse of T5's span corruption, shared by the data tests."""

from __future__ import annotations


def reconstruct(inputs: list[int], targets: list[int], sentinels: set[int]) -> list[int]:
    """Put each sentinel's span from the targets back into the inputs (both end with EOS)."""
    spans: dict[int, list[int]] = {}
    key = -1
    for t in targets[:-1]:
        if t in sentinels:
            key = t
            spans[key] = []
        else:
            spans[key].append(t)
    return [u for t in inputs[:-1] for u in spans.get(t, [t])]
