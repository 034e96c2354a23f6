"""``python -m facesvc.cli ...``: the console script without its launcher."""

from facesvc.cli import main

main()
