"""The wire: JSON-RPC line framing, Stratum message types and the work maths.

Nothing here touches a socket, a clock or asyncio; the proxy core, the simulators and
the tests all build on it.
"""
