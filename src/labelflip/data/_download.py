"""Checksummed downloads with atomic placement.

:func:`fetch` tries each mirror in turn, streams into ``<dest>.part`` while
hashing, verifies the checksum and only then moves the file onto ``dest``
with :func:`os.replace`; a failed or mismatched download leaves nothing
behind.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

from labelflip.errors import LabelflipError

CHUNK = 1 << 20
USER_AGENT = "labelflip (dataset download)"


def file_digest(path: str | os.PathLike[str], algo: str = "sha256", *, gunzip: bool = False) -> str:
    """Hex digest of a file's bytes, or of its decompressed bytes if ``gunzip``.

    Raises :class:`LabelflipError` if ``gunzip`` is set and the file is not
    valid gzip.
    """
    h = hashlib.new(algo)
    path = Path(path)
    try:
        with gzip.open(path, "rb") if gunzip else open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise LabelflipError(f"{path} is corrupt or truncated gzip ({e})") from None
    return h.hexdigest()


def _expected(md5: str | None, sha256: str | None, sha256_decompressed: str | None) -> str:
    parts = []
    if md5:
        parts.append(f"md5 {md5}")
    if sha256:
        parts.append(f"sha256 {sha256}")
    if sha256_decompressed:
        parts.append(f"sha256 (decompressed) {sha256_decompressed}")
    return ", ".join(parts)


def fetch(
    urls: list[str],
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    sha256_decompressed: str | None = None,
    timeout: float = 20,
) -> Path:
    """Download the first working URL of ``urls`` to ``dest`` and return ``dest``.

    Each given checksum is verified (``sha256_decompressed`` is the SHA-256 of
    the gunzipped content). A mirror that fails or serves bytes with the wrong
    checksum is skipped; if no mirror succeeds a :class:`LabelflipError` is
    raised (a checksum mismatch is reported in preference to network errors).
    """
    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LabelflipError(f"cannot create {dest.parent} to download {dest.name}: {e}") from None
    failures: list[str] = []
    mismatch: str | None = None
    for url in urls:
        try:
            digests = _stream(url, part, timeout)
        except (urllib.error.URLError, OSError, ValueError) as e:
            part.unlink(missing_ok=True)
            if isinstance(e, urllib.error.HTTPError):
                reason = f"HTTP {e.code} {e.reason}"
            else:
                reason = str(getattr(e, "reason", None) or e)
            failures.append(f"{url}: {reason}")
            continue
        got = []
        if md5 and digests["md5"] != md5.lower():
            got.append(("md5", md5, digests["md5"]))
        if sha256 and digests["sha256"] != sha256.lower():
            got.append(("sha256", sha256, digests["sha256"]))
        if sha256_decompressed and not got:
            try:
                actual = file_digest(part, "sha256", gunzip=True)
            except LabelflipError:
                actual = "<not valid gzip>"
            if actual != sha256_decompressed.lower():
                got.append(("sha256 (decompressed)", sha256_decompressed, actual))
        if got:
            part.unlink(missing_ok=True)
            kind, want, have = got[0]
            if mismatch is None:
                mismatch = (
                    f"checksum mismatch for {dest.name} from {url}: "
                    f"expected {kind} {want}, got {have}"
                )
            continue
        os.replace(part, dest)
        return dest
    if mismatch is not None:
        raise LabelflipError(mismatch)
    tried = "; ".join(failures) or "no URLs to try"
    raise LabelflipError(f"could not download {dest.name} (tried {tried})")


def _stream(url: str, part: Path, timeout: float) -> dict[str, str]:
    """Stream ``url`` into ``part``; return its md5 and sha256 hex digests."""
    hashes = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
        total = response.headers.get("Content-Length")
        bar = _progress(part.name.removesuffix(".part"), int(total) if total else None)
        try:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                for h in hashes.values():
                    h.update(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
        if total is not None and out.tell() != int(total):
            raise OSError(f"connection closed after {out.tell()} of {total} bytes")
    return {k: h.hexdigest() for k, h in hashes.items()}


def _progress(name: str, total: int | None) -> Any:
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (CI logs, tests)
    return tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}", disable=None)


__all__ = ["fetch", "file_digest"]
