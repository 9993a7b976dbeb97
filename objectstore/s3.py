"""The object store on any S3-compatible server, through boto3."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.errors import ObjectNotFound, StoreError
from pipeline.store import ObjectInfo, StoredObject, check_key, check_range

logger = logging.getLogger(__name__)

_MISSING = {"404", "NoSuchKey", "NotFound"}
# files above this go up as a multipart upload in parts of this size, four at a time (one PUT
# of hundreds of MB is refused by some servers, and slower everywhere)
MULTIPART_PART_BYTES = 16 * 1024 * 1024


class S3Store:
    """PUT is atomic on S3: a reader sees the whole old object or the whole new one."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str = "",
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._s3: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=32,
            ),
        )

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, body: bytes, *, content_type: str, cache_control: str) -> None:
        try:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=body,
                ContentType=content_type,
                CacheControl=cache_control,
            )
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"put {key}: {exc}") from exc

    def put_file(self, key: str, path: Path, *, content_type: str, cache_control: str) -> None:
        """Write a large local file; multipart above `MULTIPART_PART_BYTES`."""
        config = TransferConfig(
            multipart_threshold=MULTIPART_PART_BYTES,
            multipart_chunksize=MULTIPART_PART_BYTES,
            max_concurrency=4,
        )
        try:
            self._s3.upload_file(
                str(path),
                self.bucket,
                self._key(key),
                ExtraArgs={"ContentType": content_type, "CacheControl": cache_control},
                Config=config,
            )
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise StoreError(f"put {key}: {exc}") from exc

    def get(self, key: str) -> StoredObject:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=self._key(key))
            body = response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise ObjectNotFound(key) from None
            raise StoreError(f"get {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"get {key}: {exc}") from exc
        return StoredObject(
            key,
            body,
            response.get("ContentType", "application/octet-stream"),
            response.get("CacheControl", ""),
            str(response.get("ETag", "")).strip('"'),
        )

    def head(self, key: str) -> ObjectInfo:
        try:
            response = self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise ObjectNotFound(key) from None
            raise StoreError(f"head {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"head {key}: {exc}") from exc
        return ObjectInfo(
            key,
            int(response.get("ContentLength", 0)),
            response.get("ContentType", "application/octet-stream"),
            response.get("CacheControl", ""),
            str(response.get("ETag", "")).strip('"'),
        )

    def get_range(self, key: str, first: int, last: int) -> bytes:
        """Bytes `first..last` (inclusive) in one ranged GET; StoreError when `first` is past
        the end (S3's InvalidRange)."""
        check_range(key, first, last)
        try:
            response = self._s3.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={first}-{last}"
            )
            body: bytes = response["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in _MISSING:
                raise ObjectNotFound(key) from None
            raise StoreError(f"get {key} bytes {first}-{last}: {code}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"get {key} bytes {first}-{last}: {exc}") from exc
        return body

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise StoreError(f"head {key}: {exc}") from exc
        return True

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"list {prefix}: {exc}") from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"delete {key}: {exc}") from exc
