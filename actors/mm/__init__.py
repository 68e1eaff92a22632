"""The pure memory model: the buddy allocator, the cost model and the host's backing of guest
pages. Plain synchronous classes, no trio: the actors own them and spend their virtual time."""
