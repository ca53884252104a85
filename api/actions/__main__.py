"""``python -m api.actions``: the scoring routes alone (see scoring_app.py)."""

from api.actions.scoring_app import main

main()
