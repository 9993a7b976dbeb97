"""The roles that consume topics and write objects, one package each: `transcode`,
`packager`, `vod`, and `rebuild` (replay); each keeps its Kafka loop apart from its core."""
