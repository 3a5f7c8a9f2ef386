"""The farm control plane: one process that reads every proxy instance over its REST API.

Rigs reach several independent proxy instances through a TCP load balancer (or SO_REUSEPORT on
one machine); each instance keeps its own pools.  What must be decided once for the whole farm
(its hashrate and health, a priority change, renting hashpower) is decided here, so two
instances never both rent and an operator changes a priority in one place.
"""
