"""The pure core: limiter, learning, headers, protocol and state formats.

Nothing here touches the event loop, sockets, files, the environment or the clock;
`now` is always a parameter. `tests/unit/test_architecture.py` keeps it so.
"""
