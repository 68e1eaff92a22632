"""The roles of the model: vCPUs, the zone, the hinting worker, the device and the host."""
