"""The REST API under `/api/`, one module per resource (chat's own endpoints live in
`gateway/chat/routes.py`).

channels.py   channels, stream keys, live streams, and `/api/openapi.json` (which takes the
              other parts' OpenAPI fragments as `extra_paths`)
vods.py       the VOD catalog, read from the compacted `onair.vods` topic
"""
