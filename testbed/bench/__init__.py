"""``just bench``: the capacity benchmark (:mod:`testbed.bench.capacity`) and its load side."""
