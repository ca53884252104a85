"""``python -m api.actions``: the scoring routes alone (see standalone.py)."""

from api.actions.standalone import main

main()
