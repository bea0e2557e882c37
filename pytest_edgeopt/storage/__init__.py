"""Shared storage for teams: the variant cache and saved runs on object storage (S3, GCS) or a
shared directory, reached through fsspec. :mod:`.location` turns a URL into a :class:`.Store`,
:mod:`.remote_cache` is the read-through remote variant cache, :mod:`.history` keeps saved runs
in a store, :mod:`.shards` splits a run across CI jobs and reassembles its parts, and
:mod:`.maintenance` prunes and counts cache entries. Nothing here is imported when the plugin
loads, and fsspec only when a URL other than ``file://`` is used."""
