"""Transports of the round engine (:mod:`fl.engine`): they move setups and protocol messages only.

``memory``: every party in this process (the simulation behind ``fedvault run``).
The Flower integration (:mod:`fl.integrations.flower`) is the networked transport.
"""
