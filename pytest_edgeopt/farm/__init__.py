"""The device farm: ``inventory.py`` reads the devices a host drives (``--edgeopt-farm``),
``scheduling.py`` hands out pytest-xdist work by device, ``lease.py`` lets one process at a
time measure on a device, ``health.py`` reads battery and thermal state before measuring."""
