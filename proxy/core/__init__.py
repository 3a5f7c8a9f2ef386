"""The decisions, without I/O: sessions, upstreams, the fold, shares, health, routing.

Time is always passed in (``now``, seconds on a monotonic clock) so tests drive it with a
fake clock; bytes go out through the ``send`` callables the glue attaches.
"""
