"""Embedded mode: the whole service in one process on one machine (`remsguard up`).

- `journal`: the durable, fsync'd record of every event accepted over HTTP (SQLite, WAL).
- `ingest`: an HTTP body (JSON array or NDJSON) to decoded events, one outcome per event.
- `runtime`: the one task that owns the engine: group-committed ingest, the live clock,
  restart recovery from the journal, and hand-off of decisions to the compliance log.
- `compliance`: roles and principals (tokens) over the compliance log's principal table,
  including the `device` role.
- `container`: wires all of the above, and the compliance log on SQLite
  (`remsguard.adapters.storage`), for one data directory.
"""
