"""Thin asyncio glue: accept rigs, dial pools, feed bytes to the core, write what it returns."""
