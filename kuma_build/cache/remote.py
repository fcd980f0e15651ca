"""The shared remote cache: content-addressed objects over plain HTTP GET / HEAD / PUT.

    {url}/cas/<sha256>     a file's contents, named by their hash
    {url}/ac/<key>         a model build's entry: {"model", "files": {path: sha256}}

This is the layout of bazel-remote's HTTP API (any prefix, then ac/ or cas/ and
64 hex digits); nginx with WebDAV PUT, or any server that stores what is PUT,
serves it too. Downloads are hash-checked before use and stored in the local
cache, so the next build is local. Uploads send the blobs the server lacks, then
the entry last, so a reader never sees an entry whose blobs are missing (unless
the server evicted them since: that is a miss, and the rebuild uploads them again).

The remote cache only ever saves time: when it is down, slow, refuses us or
answers garbage, one warning goes to the build report, the remote is left alone
for the rest of the run, and the build goes on locally. A 404 is just a miss.
"""

import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import PurePosixPath

SHA256 = re.compile(r"[0-9a-f]{64}")


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

    def get_model(self, key: str, local) -> dict[str, bytes] | None:
        """The files of the build with this key (also stored in `local`), or None on a miss."""
        if self.given_up:
            return None
        try:
            body = self._request("GET", f"ac/{key}")
            if body is None:
                return None
            entry = _parse_entry(body, key)
            files = {}
            for path, sha in entry["files"].items():
                data = local.read_blob(sha)
                if data is None:
                    data = self._request("GET", f"cas/{sha}")
                    if data is None:
                        return None  # evicted: a miss; this build uploads it again
                    if hashlib.sha256(data).hexdigest() != sha:
                        raise RemoteError(f"sent a corrupt blob (cas/{sha[:12]} does not hash to its name)")
                    local.put_blob(data)
                files[path] = data
        except RemoteError as e:
            self._give_up(e, "building locally")
            return None
        local.write_json("models", key, entry)  # last: its blobs are all in the local cache
        return files

    def put_model(self, key: str, local) -> None:
        """Upload the local build entry `key`: the blobs the server lacks, then the entry."""
        entry = local.read_json("models", key)
        if self.given_up or not self.writable or entry is None:
            return
        try:
            for sha in sorted(set(entry["files"].values())):
                if self._request("HEAD", f"cas/{sha}") is None:
                    data = local.read_blob(sha)
                    if data is None:
                        return  # the local cache reports its own corruption
                    self._request("PUT", f"cas/{sha}", data)
            self._request("PUT", f"ac/{key}", json.dumps(entry, sort_keys=True).encode())
        except RemoteError as e:
            self._give_up(e, "not uploading this build")

    def _request(self, method: str, path: str, data: bytes | None = None) -> bytes | None:
        """The response body, or None for a 404 (a miss). Anything else wrong raises RemoteError."""
        request = urllib.request.Request(f"{self.config.url}/{path}", data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 404 and method != "PUT":
                return None
            raise RemoteError(f"answered HTTP {e.code} {e.reason} to {method} {_short(path)}{self._auth_hint(e.code)}")
        except urllib.error.URLError as e:
            raise RemoteError(_unreachable(e.reason, self.config.timeout))
        except TimeoutError:
            raise RemoteError(f"timed out after {self.config.timeout:g} s")
        except OSError as e:
            raise RemoteError(f"broke off {method} {_short(path)} ({e.strerror or type(e).__name__})")
        except http.client.HTTPException as e:
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


def _parse_entry(body: bytes, key: str) -> dict:
    """A model entry from the server, checked: its names must be hashes and safe relative paths."""
    try:
        entry = json.loads(body)
        files = entry["files"]
        ok = isinstance(entry.get("model", ""), str) and isinstance(files, dict) and all(
            isinstance(sha, str) and SHA256.fullmatch(sha) and _safe_path(path) for path, sha in files.items())
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise RemoteError(f"sent an unreadable entry for ac/{key[:12]}")
    return {"model": entry.get("model", ""), "files": files}


def _safe_path(path) -> bool:
    if not isinstance(path, str) or not path or "\\" in path:
        return False
    pure = PurePosixPath(path)
    return not pure.is_absolute() and ".." not in pure.parts


def _short(path: str) -> str:
    kind, _, name = path.partition("/")
    return f"{kind}/{name[:12]}"


def _unreachable(reason, timeout: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g} s"
    detail = getattr(reason, "strerror", None) or str(reason)
    return f"unreachable ({detail[:1].lower() + detail[1:]})"
