"""The name of epyclab's logger and the logger itself.

Library code never prints: it logs here, and the application decides where the
messages go (``logging.basicConfig(level=logging.INFO)`` shows them).
"""

from __future__ import annotations

import logging

#: The name of the logger every epyclab module logs to.
Logger = "epyclab"

logger = logging.getLogger(Logger)
