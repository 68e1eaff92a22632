"""What actors say to each other: frozen messages, units, and the pure virtqueue."""
