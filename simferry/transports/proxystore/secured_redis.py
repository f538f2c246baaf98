"""ProxyStore's Redis connector made safe for simferry's servers.

ProxyStore's own ``RedisConnector`` has no password or Unix-socket support; this subclass
talks through simferry's Redis client and keeps its keys under the run's namespace, which
the Redis transport's owner frees at the end like its own. It imports ProxyStore at import
time, so the transport imports it only where ProxyStore is installed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from proxystore.connectors.redis import RedisConnector, RedisKey

from simferry.transports.common import make_client


class SecuredRedis(RedisConnector):
    """ProxyStore's Redis connector with a password, Unix sockets and a key namespace."""

    def __init__(self, url: str, password: str | None, namespace: str) -> None:
        self.url = url
        self.password = password
        self.namespace = namespace
        self.clear = False
        self.hostname, self.port = url, 0  # for ProxyStore's repr only
        self._redis_client = make_client(url, password, retries=3)

    def __repr__(self) -> str:
        return f"SecuredRedis({self.url})"  # never the password

    def config(self) -> dict[str, Any]:
        return {"url": self.url, "password": self.password, "namespace": self.namespace}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SecuredRedis:
        return cls(**config)

    def _key(self) -> RedisKey:
        return RedisKey(redis_key=f"{self.namespace}ps:{uuid.uuid4()}")

    def new_key(self, obj: Any = None) -> RedisKey:
        return self._key()

    def put(self, obj: Any) -> RedisKey:
        key = self._key()
        self._redis_client.set(key.redis_key, bytes(obj))
        return key

    def put_batch(self, objs: Sequence[Any]) -> list[RedisKey]:
        keys = [self._key() for _ in objs]
        self._redis_client.mset({k.redis_key: bytes(o) for k, o in zip(keys, objs, strict=True)})
        return keys
