"""shared.lru: the thread-safe LRU."""
from __future__ import annotations


def test_lru_cache_evicts_least_recently_used_and_can_hold_none() -> None:
    from shared.lru import LruCache

    cache: LruCache[str, int | None] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", None)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)  # evicts "b"
    assert cache.lookup("b") == (False, None) and cache.lookup("c") == (True, 3)
    cache.put("b", None)
    assert cache.lookup("b") == (True, None) and cache.get("a") is None and len(cache) == 2
    off: LruCache[str, int] = LruCache(0)
    off.put("x", 1)
    assert off.lookup("x") == (False, None)


def test_ttl_lru_expires_entries_and_evicts_the_least_recently_used(monkeypatch) -> None:
    import shared.lru as lru

    now = [100.0]
    monkeypatch.setattr(lru.time, "monotonic", lambda: now[0])
    cache: lru.TtlLru[str, int] = lru.TtlLru(ttl_s=10.0, size=2)
    cache.put("a", 1)
    cache.put("b", 2, ttl_s=2.0)  # its own, shorter TTL
    cache.put("c", 3, ttl_s=60.0)  # never longer than the cache's
    assert cache.get("a") is None and len(cache) == 2  # size 2: "a" went first
    now[0] += 3
    assert cache.get("b") is None and cache.get("c") == 3
    now[0] += 8
    assert cache.get("c") is None and len(cache) == 0
    off: lru.TtlLru[str, int] = lru.TtlLru(ttl_s=0.0, size=5)
    off.put("a", 1)
    assert off.get("a") is None
