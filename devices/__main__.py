"""``python -m devices start|flags|stop|serve``: an emulated phone to try the Android
targets with (:mod:`devices.tryout`)."""

import sys

from devices.tryout import main

sys.exit(main())
