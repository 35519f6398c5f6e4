#!/usr/bin/env python3
"""Pre-fill one postwerk mailbox's Inbox with N ~10 KB messages, the server stopped.

The hook behind ``POSTWERK_PREFILL_CMD`` (bench/mailbox_size.sh): it writes through
the store API, as delivery does (one blob file per message, the summary and ENVELOPE IMAP will
read, UIDs and folder counters), in transactions of 1,000 items, and without fsync
per blob: this is set-up, not measurement. Tops the mailbox up to N messages.

    POSTWERK_PREFILL_CMD='.venv/bin/python bench/postwerk_prefill.py "$1" "$2" "$3"'
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from smtpload import make_message

from postwerk.core.ids import new_id
from postwerk.mime.summary import summarize
from postwerk.protocols.imap.responses import stored_envelope
from postwerk.store.blobs import FileBlobStore
from postwerk.store.records import NewItem
from postwerk.store.sqlite import open_sqlite

BATCH = 1000


async def prefill(data_dir: Path, address: str, count: int, pool_size: int) -> int:
    backend = await open_sqlite(data_dir / "postwerk.db")
    blobs = FileBlobStore(data_dir / "blobs")
    try:
        recipient = await backend.directory.find_recipient(address)
        if recipient is None:
            raise SystemExit(f"no mailbox {address}")
        inbox = await backend.mailstore.get_folder(recipient.id, "Inbox")
        missing = count - inbox.messages
        rng = random.Random(4711)
        pool = [
            make_message(
                i, "prefill@client.bench.test", address, 10240, random.Random(rng.random())
            )
            for i in range(pool_size)
        ]
        summaries = [summarize(m).to_json() for m in pool]
        envelopes = [stored_envelope(s) for s in summaries]
        prefix = b"Return-Path: <prefill@client.bench.test>\r\n"
        done = 0
        while done < missing:
            items = []
            for n in range(min(BATCH, missing - done)):
                k = (done + n) % pool_size
                blob_id = new_id()
                path = blobs.path(blob_id)
                blobs.ensure_fanout(path.parent)
                path.write_bytes(pool[k])
                items.append(
                    NewItem(
                        mailbox_id=recipient.id,
                        folder_name="Inbox",
                        item_class="IPM.Note",
                        blob_id=blob_id,
                        header_prefix=prefix,
                        size=len(prefix) + len(pool[k]),
                        internal_date=time.time(),
                        summary=summaries[k],
                        imap_envelope=envelopes[k],
                        delivery_key=f"prefill/{blob_id}",
                    )
                )
            await backend.mailstore.deliver(items)
            done += len(items)
        return max(missing, 0)
    finally:
        await backend.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("address")
    ap.add_argument("count", type=int)
    ap.add_argument("--pool", type=int, default=500, help="distinct bodies to cycle through")
    args = ap.parse_args(argv)
    started = time.monotonic()
    added = asyncio.run(prefill(args.data_dir, args.address, args.count, args.pool))
    took = time.monotonic() - started
    print(f"prefill: added {added} messages to {args.address} in {took:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
