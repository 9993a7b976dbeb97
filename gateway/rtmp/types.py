"""Where the RTMP server meets the rest of onair: the handler a deployment implements."""

from __future__ import annotations

from typing import Protocol

from pipeline.media import CodecConfig, MediaUnit


class Publication(Protocol):
    """One accepted publish. `close` is called exactly once, however the publish ends."""

    async def on_config(self, config: CodecConfig) -> None: ...

    async def on_media(self, unit: MediaUnit) -> None: ...

    async def on_metadata(self, metadata: dict[str, object]) -> None: ...

    async def close(self, reason: str) -> None: ...


class PublishHandler(Protocol):
    async def start_publish(self, app: str, stream_key: str, peer: str) -> Publication:
        """Accept a publish, or raise `pipeline.errors.AuthError(message)` to refuse it.

        The message is sent to the client and logged, so it must never contain the key.
        """
        ...
