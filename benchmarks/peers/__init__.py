"""Peer implementations of pagehint's models, written the way a user of another tool would.

Each peer reuses pagehint's pure parts (cost model, buddy allocator, host backing, workload
generators) so that a benchmark against it compares the simulation engine and actor layer, not
the allocator.
"""
