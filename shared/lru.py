"""A small thread-safe LRU for per-process caches whose keys name immutable content (a profile
version, a model version): entries are never invalidated, only evicted by size."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

class LruCache(Generic[K, V]):
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0  # entries dropped for size so far

    def get(self, key: K) -> V | None:
        """The value (marked recently used), or None on a miss."""
        return self.lookup(key)[1]

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """(found, value): for caches where None is itself a cached value."""
        with self._lock:
            if key not in self._data:
                return False, None
            self._data.move_to_end(key)
            return True, self._data[key]

    def put(self, key: K, value: V) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
                self.evicted += 1

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> list[K]:
        """The keys, least recently used first (a copy)."""
        with self._lock:
            return list(self._data)


class TtlLru(Generic[K, V]):
    """An LRU whose entries also expire ``ttl_s`` seconds after they were put (a put may give its own,
    shorter TTL). For one event loop's caches (no lock): the gateway's answers and item facts."""

    def __init__(self, *, ttl_s: float, size: int) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()  # key -> (expires at, value)

    def get(self, key: K) -> V | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        if time.monotonic() > hit[0]:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return hit[1]

    def put(self, key: K, value: V, *, ttl_s: float | None = None) -> None:
        ttl = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s)
        if ttl <= 0 or self.size <= 0:
            return
        self._data[key] = (time.monotonic() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> list[K]:
        """The keys not yet expired, least recently used first (a copy)."""
        now = time.monotonic()
        return [k for k, (expires, _) in self._data.items() if expires >= now]
