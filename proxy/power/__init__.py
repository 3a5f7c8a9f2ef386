"""Power-aware backfill: UPS state (Network UPS Tools) and planned curtailments tell the
rental controller which rigs are about to stop, so it rents before they go dark.

* ``nutproto``: the NUT text protocol, pure (commands out, lines in, readings).
* ``nut``: the asyncio client (one short session per poll, with timeouts).
* ``config``: ``[power]``, ``[[power.ups]]``, ``[[power.curtail]]``.
* ``plan``: which rigs are at risk and whether to rent now; pure, time passed in.
* ``monitor``: polls the UPSes, keeps the curtailments, feeds the plan to the controller.
"""
