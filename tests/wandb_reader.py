"""Read what a W&B offline run logged, so tests check real data. wandb 0.31 offline writes no
config.yaml or wandb-summary.json, only offline-run-*/run-<id>.wandb, and ships no reader for it.

Format: a 7-byte header (b":W&B", 0xBEE1 LE, version 0), then LevelDB's log format in 32 KiB
blocks counted from file start: records of crc (4 bytes) | length (2, LE) | type (1 full,
2 first, 3 middle, 4 last) | payload; a block tail under 7 bytes is padding. The crc is plain
zlib CRC-32 of type + payload (not LevelDB's masked crc32c). Payloads are `Record` protobufs:
`run` ones hold project/group/job_type/name/tags and the whole config (changes like `run.tags =`
write another full `run` record; the last wins); config/summary/history items have a path
(`nested_key`, else `key`) and a `value_json`, config values being stored unwrapped.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from wandb.proto.wandb_internal_pb2 import Record

BLOCK, HEAD = 32 * 1024, 7  # block size; file header size = record header size


@dataclass
class OfflineRun:
    project: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def find_offline_runs(root: Path) -> list[Path]:
    """Every offline-run-* directory below `root`, sorted."""
    return sorted(p for p in Path(root).rglob("offline-run-*") if p.is_dir())


def _records(data: bytes) -> Iterator[Record]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file")
    pos, payload = HEAD, b""
    while pos + HEAD <= len(data):
        if BLOCK - pos % BLOCK < HEAD:  # padding at the end of a block
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        start, pos = pos, pos + HEAD + length
        if pos > len(data):  # truncated tail: the run was killed mid-write
            return
        if zlib.crc32(data[start + 6:pos]) != crc:
            raise ValueError(f"bad CRC at byte {start}")
        chunk = data[start + HEAD:pos]
        payload = chunk if kind in (1, 2) else payload + chunk
        if kind in (1, 4):
            yield Record.FromString(payload)


def _apply(target: dict[str, Any], items: Iterable[Any], remove: bool = False) -> None:
    """Set (or remove) each item's JSON value at its key path, creating nested dicts."""
    for item in items:
        *parents, last = list(item.nested_key) or [item.key]
        node = target
        for key in parents:
            node = node.setdefault(key, {})
        if remove:
            node.pop(last, None)
        else:
            node[last] = json.loads(item.value_json)


def read_offline_run(run_dir: Path) -> OfflineRun:
    """Decode an offline-run-* directory (or its run-*.wandb file)."""
    run_dir = Path(run_dir)
    path = run_dir if run_dir.suffix == ".wandb" else next(run_dir.glob("run-*.wandb"))
    out = OfflineRun()
    for rec in _records(path.read_bytes()):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.project, out.group, out.job_type = r.project, r.run_group, r.job_type
            out.name, out.tags = r.display_name, list(r.tags)
            _apply(out.config, r.config.update)
        elif kind in ("config", "summary"):
            _apply(getattr(out, kind), getattr(rec, kind).update)
            _apply(getattr(out, kind), getattr(rec, kind).remove, remove=True)
        elif kind == "history":
            out.history.append({})
            _apply(out.history[-1], rec.history.item)
    out.config.pop("_wandb", None)  # wandb's internals; `_step`, `_runtime`... are kept
    out.summary.pop("_wandb", None)
    return out
