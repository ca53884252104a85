"""A real uvicorn process serving the scoring routes, for the kill/restart tests.

python -m tests.actions_server --database-url ... --port N
"""

from api.actions.scoring_app import main

if __name__ == "__main__":
    main()
