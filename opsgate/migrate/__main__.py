import sys

from opsgate.migrate.cli import main

sys.exit(main(prog="python -m opsgate.migrate"))
