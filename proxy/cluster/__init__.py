"""Several instances, one farm, coordinated through etcd (``[cluster]`` in the config).

* ``etcd``: the client (etcd's v3 JSON gateway over aiohttp).
* ``settings``: pool settings in etcd, written by any instance, watched by all.
* ``node``: registration under a lease, summaries, the election of the rental leader.
* ``ledger``, ``rental``: the leader's backfill controller with its ledger in etcd, every
  write fenced by the leader's lease.
* ``api``: the farm-wide routes any instance serves, and the 503 of a write etcd refused.

Without ``[cluster]`` none of this is imported and an instance runs exactly as before.
"""
