"""The shared remote cache: content-addressed objects over plain HTTP GET / HEAD / PUT.

    {url}/cas/<sha256>     a file's contents, named by their hash
    {url}/ac/<key>         a model build's entry (cache/entry.py), signed when cache.remote_key_env is set

This is the layout of bazel-remote's HTTP API (any prefix, then ac/ or cas/ and
64 hex digits); nginx with WebDAV PUT, or any server that stores what is PUT,
serves it too. Uploads send the blobs the server lacks, then the entry last, so a
reader never sees an entry whose blobs are missing (unless the server evicted
them since: that is a miss, and the rebuild uploads them again).

Nothing from the server is trusted: an entry must carry a valid HMAC when a key
is configured, and pass every check of cache/entry.py (this model, this key,
exactly the files this build writes, index.js rendered by Kuma from its program)
before any of it reaches the output folder or the local cache. Each request has
one deadline (remote_timeout) for connecting, sending and reading everything,
however slowly the server trickles, and a response body is read only up to the
size expected (an entry's cap, or the blob's size recorded in its entry).

The remote cache only ever saves time: when it is down, slow, refuses us or
answers garbage, one warning goes to the build report, the remote is left alone
for the rest of the run, and the build goes on locally. A 404 is just a miss.
"""

import hashlib
import http.client
import json
import os
import socket
import threading
import urllib.error
import urllib.request

from kuma_build.cache.entry import MAX_ENTRY_BYTES, BadEntry, check_files, parse_entry, sign, signature_ok

MAX_REPLY_BYTES = 64 << 10  # what a server may say in answer to a PUT or in an error page


class RemoteError(Exception):
    """The server can't be used for the rest of this run; the message says why."""


class RemoteCache:
    def __init__(self, config, read_only: bool = False):
        self.config = config
        self.writable = config.write and not read_only
        self.problems: list[str] = []  # at most one warning, for the build report
        self.given_up = False
        token = os.environ.get(config.auth_env) if config.auth_env else None
        self.headers = {"Authorization": token} if token else {}
        secret = os.environ.get(config.key_env) if config.key_env else None
        self.secret = secret.encode() if secret else None
        if config.key_env and not secret:  # entries can be neither checked nor signed: stay away
            self._give_up(RemoteError(f"is not used: cache.remote_key_env names {config.key_env}, which is not set, "
                                      "so its entries cannot be checked"), "building locally")

    def get_model(self, key: str, model, local) -> dict[str, bytes] | None:
        """The files of `model`'s build with this key, checked and then stored in `local`; None on a miss."""
        if self.given_up:
            return None
        try:
            body = self._request("GET", f"ac/{key}", cap=MAX_ENTRY_BYTES)
            if body is None:
                return None
            try:
                entry = parse_entry(json.loads(body), model.name, key)
            except ValueError:
                raise BadEntry("is not JSON")
            if self.secret and not signature_ok(entry, self.secret):
                raise BadEntry("is not signed with the key in " + self.config.key_env)
            files = {}
            for path, record in entry["files"].items():
                sha, size = record["sha256"], record["size"]
                data = local.read_blob(sha)
                if data is None:
                    data = self._request("GET", f"cas/{sha}", cap=size)
                    if data is None:
                        return None  # evicted: a miss; this build uploads it again
                    if hashlib.sha256(data).hexdigest() != sha:
                        raise RemoteError(f"sent a corrupt blob (cas/{sha[:12]} does not hash to its name)")
                files[path] = data
            check_files(entry, files, model)
        except BadEntry as e:
            self._give_up(RemoteError(f"sent an entry for ac/{key[:12]} that Kuma rejects: it {e}"), "building locally")
            return None
        except RemoteError as e:
            self._give_up(e, "building locally")
            return None
        local.put_model(key, model.name, files)  # only now: nothing of a rejected entry is kept
        return files

    def put_model(self, key: str, local) -> None:
        """Upload the local build entry `key`: the blobs the server lacks, then the entry (signed if keyed)."""
        entry = local.read_json("models", key)
        if self.given_up or not self.writable or entry is None:
            return
        try:
            shas = sorted({record["sha256"] for record in entry["files"].values()})
        except (AttributeError, KeyError, TypeError):
            return  # get_model discards a broken local entry and reports it
        try:
            for sha in shas:
                if self._request("HEAD", f"cas/{sha}") is None:
                    data = local.read_blob(sha)
                    if data is None:
                        return  # the local cache reports its own corruption
                    self._request("PUT", f"cas/{sha}", data)
            if self.secret:
                entry = sign(entry, self.secret)
            self._request("PUT", f"ac/{key}", json.dumps(entry, sort_keys=True).encode())
        except RemoteError as e:
            self._give_up(e, "not uploading this build")

    def _request(self, method: str, path: str, data: bytes | None = None, cap: int = MAX_REPLY_BYTES) -> bytes | None:
        """The response body (at most `cap` bytes), or None for a 404 (a miss). Anything else wrong,
        or the whole request taking longer than remote_timeout, raises RemoteError."""
        request = urllib.request.Request(f"{self.config.url}/{path}", data=data, method=method, headers=self.headers)
        deadline = _Deadline(self.config.timeout)
        opener = urllib.request.build_opener(_WatchedHTTP(deadline), _WatchedHTTPS(deadline))
        try:
            with deadline, opener.open(request, timeout=self.config.timeout) as response:
                body = b"" if method == "HEAD" else _read_capped(response, cap, f"{method} {_short(path)}")
            if deadline.expired:  # a body without a length just ends when the socket is shut
                raise TimeoutError
            return body
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 404 and method != "PUT":
                return None
            raise RemoteError(f"answered HTTP {e.code} {e.reason} to {method} {_short(path)}{self._auth_hint(e.code)}")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            if deadline.expired:
                raise RemoteError(f"timed out after {self.config.timeout:g} s")
            if isinstance(e, urllib.error.URLError):
                raise RemoteError(_unreachable(e.reason, self.config.timeout))
            if isinstance(e, TimeoutError):
                raise RemoteError(f"timed out after {self.config.timeout:g} s")
            if isinstance(e, OSError):
                raise RemoteError(f"broke off {method} {_short(path)} ({e.strerror or type(e).__name__})")
            raise RemoteError(f"answered garbage to {method} {_short(path)} ({type(e).__name__})")

    def _auth_hint(self, code: int) -> str:
        if code not in (401, 403):
            return ""
        if not self.config.auth_env:
            return " (set cache.remote_auth_env to the variable holding its token)"
        state = "is set" if self.headers else "is not set"
        return f" (the token variable {self.config.auth_env} {state})"

    def _give_up(self, error: RemoteError, consequence: str) -> None:
        self.given_up = True
        self.problems.append(f"remote cache {self.config.url} {error}; {consequence}")


def _read_capped(response, cap: int, what: str) -> bytes:
    """The body, read in pieces; a server announcing or sending more than `cap` bytes is refused
    before it fills memory."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > cap:
        raise RemoteError(f"announced {int(length)} bytes for {what}, more than the {cap} expected")
    body = bytearray()
    while piece := response.read(min(1 << 16, cap + 1 - len(body))):
        body += piece
        if len(body) > cap:
            raise RemoteError(f"sent more than the {cap} bytes expected for {what}")
    return bytes(body)


class _Deadline:
    """One request's deadline: when it passes, the connection's socket is shut down, which ends
    any read or write blocked on it, however slowly the server trickles."""

    def __init__(self, seconds: float):
        self.seconds, self.expired, self.sock = seconds, False, None
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self.expire)
        self.timer.daemon = True

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            self._shut()

    def attach(self, sock) -> None:
        with self.lock:
            self.sock = sock
            if self.expired:
                self._shut()

    def _shut(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed


def _watched(connection_class, deadline: _Deadline):
    class Watched(connection_class):
        def connect(self):
            super().connect()
            deadline.attach(self.sock)
    return Watched


class _WatchedHTTP(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_watched(http.client.HTTPConnection, self.deadline), req)


class _WatchedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(_watched(http.client.HTTPSConnection, self.deadline), req, context=self._context)


def _short(path: str) -> str:
    kind, _, name = path.partition("/")
    return f"{kind}/{name[:12]}"


def _unreachable(reason, timeout: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g} s"
    detail = getattr(reason, "strerror", None) or str(reason)
    return f"unreachable ({detail[:1].lower() + detail[1:]})"
