"""Opening a store in the background, so that the first cache lookup does not pay for it.

Opening an S3 store costs about 1.3 s (importing s3fs and aiobotocore, making the
filesystem) and its first request another 0.5-0.7 s (the client's session: credentials,
endpoint, service model). A session that knows its shared cache's URL at start-up starts
:func:`open_in_background` there; the first lookup, much later (after collection, fixtures,
the model's import), takes the store :meth:`StoreOpening.result` gives, waiting only for
what is left of the opening. Nothing here imports fsspec on the caller's thread.

A failure while opening (backend missing, server unreachable, credentials refused) is kept
and raised, as :class:`~pytest_edgeopt.storage.location.StoreUnavailable`, to whoever asks
for the store: the remote cache then goes offline with its one progress line.
"""

from __future__ import annotations

import threading
import time

from pytest_edgeopt.storage.location import Store, StoreUnavailable, open_store

#: The object a warm-up reads: absent, so one GET answered "not found" (never a real entry).
WARM_KEY = "variants/00/.edgeopt-warm-up"


class StoreOpening:
    """The store at ``url`` being opened on a daemon thread: :func:`open_store`, then one
    cheap request (a read of :data:`WARM_KEY`) that sets up the client and its connection.
    Timestamps are :func:`time.monotonic` seconds."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.started_at = time.monotonic()
        #: When the store was open and warm (or the opening failed); ``None`` until then.
        self.ready_at: float | None = None
        self._store: Store | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self.thread = threading.Thread(target=self._open, name="edgeopt-open-store", daemon=True)
        self.thread.start()

    def _open(self) -> None:
        try:
            store = open_store(self.url)
            store.read(WARM_KEY)
            self._store = store
        except BaseException as exc:  # kept for the caller: the thread must not die with it unsaid
            self._error = exc
        finally:
            self.ready_at = time.monotonic()
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def open_s(self) -> float | None:
        """Seconds the opening took (import, filesystem, first request); ``None`` while it runs."""
        return None if self.ready_at is None else self.ready_at - self.started_at

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the opening ended (at most ``timeout_s`` seconds); whether it did."""
        return self._done.wait(timeout_s)

    def result(self) -> Store:
        """The open store, waiting for the opening to end; StoreUnavailable when it failed."""
        self._done.wait()
        if self._error is not None:
            if isinstance(self._error, StoreUnavailable):
                raise self._error
            first = str(self._error).splitlines()[0] if str(self._error) else ""
            raise StoreUnavailable(f"opening the store failed: {type(self._error).__name__}: {first[:160]}")
        assert self._store is not None
        return self._store


_openings: dict[str, StoreOpening] = {}
_lock = threading.Lock()


def open_in_background(url: str) -> StoreOpening:
    """The opening of the store at ``url`` this process started, started now if none was
    (once per URL and process: the session's start-up starts it, the remote cache takes it)."""
    with _lock:
        opening = _openings.get(url)
        if opening is None:
            opening = _openings[url] = StoreOpening(url)
        return opening


def take(url: str) -> StoreOpening:
    """The opening of ``url`` the session's start-up started, else one started now; taken
    off the list either way (one remote cache per opening: a later one for the same URL,
    perhaps with another endpoint in the environment, opens the store anew)."""
    with _lock:
        opening = _openings.pop(url, None)
    return opening if opening is not None else StoreOpening(url)
