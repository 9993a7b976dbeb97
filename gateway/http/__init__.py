"""The HTTP gateway: one Starlette app composing the roles that face viewers (the origin in
`gateway/origin`, chat in `gateway/chat`, the REST API in `gateway/api`).

app.py          `create_app()`: the factory, its lifespan hooks, domain errors → responses
mw_metrics.py   request metrics by route template and status (one middleware per file)
player.py       the player pages and their `static/` assets
serve.py        `build_app()`: the whole gateway as `onair http` runs it
"""
