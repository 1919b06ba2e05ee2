"""``python -m epyclab`` is the ``epyclab`` command."""

from epyclab.cli import main

main()
