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
