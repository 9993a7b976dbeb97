"""The HLS origin: what viewers and CDNs fetch, served from the object store.

hls.py     URL → object key (strict patterns), Cache-Control, ETag, byte ranges, CORS
cache.py   in-process object cache: one store read for N viewers (single-flight, LRU)
"""
