"""Avro single-object encoding for every onair event, on fastavro.

A message is `C3 01` + the writer schema's CRC-64-AVRO fingerprint (8 bytes, little endian) +
the Avro binary body, as the Avro spec's single-object encoding defines it. The reader looks the
fingerprint up among the schemas it knows (those in this folder, plus any a `resolver` can
fetch, e.g. from the `onair.schemas` topic) and resolves the writer schema to its own version of
the same record, so adding an optional field stays readable old→new and new→old.

Anything else — a wrong header, a fingerprint nobody knows, a body that is not valid Avro —
raises a `pipeline.errors.CodecError` subclass that a consumer skips and counts.

When a schema gains a field, its earlier version goes to `previous/` (`<Name>.<n>.avsc`): a
reader still decodes the records written with it (the topics keep them for days), the new
field at its default.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from pipeline.errors import CorruptPayloadError, UnknownSchemaError

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
SCHEMA_DIR = Path(__file__).parent
PREVIOUS_DIR = SCHEMA_DIR / "previous"


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint the Avro spec calls CRC-64-AVRO (fastavro's), as an integer."""
    return int.from_bytes(_fingerprint(data.decode()), "little")


def _fingerprint(canonical: str) -> bytes:
    """The 8 bytes of the single-object header: CRC-64-AVRO of the canonical form, little
    endian (fastavro's hex spells the bytes in that order)."""
    return bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO"))


@dataclass(frozen=True, slots=True)
class Schema:
    name: str  # full name, e.g. "onair.GopChunk"
    parsed: Any
    canonical: str
    fingerprint: bytes  # 8 bytes, little endian

    @classmethod
    def from_json(cls, schema_json: str | Mapping[str, Any]) -> Schema:
        raw = json.loads(schema_json) if isinstance(schema_json, str) else dict(schema_json)
        parsed = fastavro.parse_schema(raw, _write_hint=False)
        canonical = to_parsing_canonical_form(parsed)
        fingerprint = _fingerprint(canonical)
        name = raw["name"] if "." in raw["name"] else f"{raw.get('namespace', '')}.{raw['name']}"
        return cls(name.lstrip("."), parsed, canonical, fingerprint)

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def load_schemas(directory: Path = SCHEMA_DIR) -> dict[str, Schema]:
    """Every `*.avsc` in `directory`, by short record name (`GopChunk`)."""
    schemas = {}
    for path in sorted(directory.glob("*.avsc")):
        schema = Schema.from_json(path.read_text())
        schemas[schema.short_name] = schema
    return schemas


def load_previous(directory: Path = PREVIOUS_DIR) -> list[Schema]:
    """Earlier versions of our schemas (`<Name>.<n>.avsc`): writer schemas only."""
    return [Schema.from_json(path.read_text()) for path in sorted(directory.glob("*.avsc"))]


Resolver = Callable[[bytes], str | None]


class Codec:
    """Encode records of our schemas; decode any record whose writer schema we can find."""

    def __init__(
        self, schemas: Mapping[str, Schema] | None = None, resolver: Resolver | None = None
    ) -> None:
        self.schemas = dict(schemas if schemas is not None else load_schemas())
        previous = load_previous() if schemas is None else []
        self._by_fingerprint = {s.fingerprint: s for s in [*previous, *self.schemas.values()]}
        self._resolver = resolver

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        schema = self.schemas[name]
        out = io.BytesIO()
        out.write(MAGIC)
        out.write(schema.fingerprint)
        fastavro.schemaless_writer(out, schema.parsed, dict(record))
        return out.getvalue()

    def decode(self, data: bytes | None) -> tuple[str, dict[str, Any]]:
        """→ (short record name, record as a dict), resolved to our version of the schema."""
        if data is None or len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise CorruptPayloadError("not an Avro single-object message (bad header)")
        fingerprint = data[2:HEADER_SIZE]
        writer = self._writer_schema(fingerprint)
        reader = self.schemas.get(writer.short_name, writer)
        body = io.BytesIO(data[HEADER_SIZE:])
        try:
            record = fastavro.schemaless_reader(body, writer.parsed, reader.parsed)
        except Exception as exc:  # fastavro raises many types on garbage
            raise CorruptPayloadError(
                f"{writer.short_name} body is not valid Avro: {type(exc).__name__}"
            ) from None
        if body.tell() != len(data) - HEADER_SIZE:
            raise CorruptPayloadError(f"{writer.short_name} body has trailing bytes")
        if not isinstance(record, dict):
            raise CorruptPayloadError(f"{writer.short_name} did not decode to a record")
        return writer.short_name, record

    def expect(self, name: str, data: bytes | None) -> dict[str, Any]:
        """Decode and check the record type."""
        found, record = self.decode(data)
        if found != name:
            raise UnknownSchemaError(f"expected {name}, got {found}")
        return record

    def _writer_schema(self, fingerprint: bytes) -> Schema:
        known = self._by_fingerprint.get(fingerprint)
        if known is not None:
            return known
        schema_json = self._resolver(fingerprint) if self._resolver else None
        if schema_json is None:
            raise UnknownSchemaError(f"unknown schema fingerprint {fingerprint.hex()}")
        try:
            schema = Schema.from_json(schema_json)
        except Exception as exc:
            raise UnknownSchemaError(f"schema {fingerprint.hex()} does not parse: {exc}") from None
        if schema.fingerprint != fingerprint:
            raise UnknownSchemaError(f"schema {fingerprint.hex()} fingerprint mismatch")
        self._by_fingerprint[fingerprint] = schema
        return schema
