"""BlobStore in a dict, for unit tests. Same semantics as `store.blobs.FileBlobStore`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

from postwerk.core.errors import NotFound
from postwerk.core.ids import new_id
from postwerk.store.blobs import BufferedBlobWriter


class MemoryBlobStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def writer(self) -> BufferedBlobWriter:
        return BufferedBlobWriter(self._put)

    async def _put(self, data: bytes) -> str:
        blob_id = new_id()
        self._blobs[blob_id] = data
        return blob_id

    async def read(self, blob_id: str) -> bytes:
        try:
            return self._blobs[blob_id]
        except KeyError:
            raise NotFound(f"blob {blob_id} not found") from None

    async def stream(self, blob_id: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        data = await self.read(blob_id)
        for start in range(0, len(data), chunk_size):
            yield data[start : start + chunk_size]

    async def size(self, blob_id: str) -> int:
        return len(await self.read(blob_id))

    async def delete(self, blob_id: str) -> None:
        """Idempotent: garbage collection may run twice."""
        self._blobs.pop(blob_id, None)

    async def read_many(
        self,
        blob_ids: Sequence[str],
        *,
        inline: bool = False,
        limits: Mapping[str, int] | None = None,
    ) -> dict[str, bytes]:
        wanted = limits or {}
        return {
            b: self._blobs[b][: wanted.get(b, len(self._blobs[b]))]
            for b in blob_ids
            if b in self._blobs
        }

    async def delete_many(self, blob_ids: Sequence[str]) -> None:
        for blob_id in blob_ids:
            self._blobs.pop(blob_id, None)

    async def ids(self) -> list[str]:
        return sorted(self._blobs)
