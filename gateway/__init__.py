"""The edges: one package per role.

rtmp/     the RTMP protocol library (sans-I/O parsers, the publish state machine) and server
ingest/   an accepted publish → GOP chunks and lifecycle events in Kafka
origin/   the HLS origin and its object cache
chat/     live chat: WebSocket protocol, fan-out across chat servers, history, moderation
api/      the REST API (channels, VODs)
http/     the Starlette app that composes origin, chat, API and player pages
"""
