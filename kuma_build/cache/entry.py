"""A model build's cache entry, and the checks every restore applies before a file is used.

    {"model": name, "key": key, "files": {path: {"sha256": hex, "size": bytes}}, "hmac"?: hex}

An entry from a cache (local or remote) is trusted only as far as it is consistent
with what this build would produce:

  - it is for this model and this key;
  - it names exactly index.js, index.d.ts, manifest.json, a module for each device class
    the program lists (gpu.js, cpu.js) and the weight chunks that the program lists, each
    chunk named weights/<first 12 hex digits of its sha256>.bin (outfolder.chunk_file);
  - every file has the hash and size the entry records;
  - index.js, index.d.ts and the class modules are byte for byte what jsmodule renders from
    the program they embed: the only code they carry is Kuma's runtime, never the entry's;
  - manifest.json agrees with the program (model, key, inputs, outputs, chunks, and each
    class's kernels and dispatches) and the program's inputs are kuma.toml's.

What the checks cannot tell is whether the program's kernels and weights are the ones
this compiler would produce: that needs trust in the writers (docs/reliability.md),
which the optional HMAC over the entry provides for a shared cache.
"""

import hashlib
import hmac
import json
import re

from kuma_build.devices import PROGRAMS
from kuma_build.jsmodule import TS_ARRAY, render_class_js, render_dts, render_js, runtime_needs
from kuma_build.outfolder import ID_HEX, chunk_file, chunks_digest, class_file, expand_copies, join_program, program_from_js, used_chunks

SHA256 = re.compile(r"[0-9a-f]{64}")
CHUNK_ID = re.compile(f"[0-9a-f]{{{ID_HEX}}}")
CHUNK_FILE = re.compile(f"weights/({CHUNK_ID.pattern})\\.bin")
FIXED_FILES = ("index.js", "index.d.ts", "manifest.json")
CLASS_FILES = {class_file(name): name for name in PROGRAMS}
MAX_ENTRY_BYTES = 1 << 20  # an entry lists a few files per MiB of weights: far below this
MAX_TEXT_BYTES = 64 << 20  # index.js (kernels and program), index.d.ts, manifest.json


class BadEntry(Exception):
    """The entry or its files are not what this build would produce; the message says how."""


def make_entry(model: str, key: str, files: dict[str, bytes]) -> dict:
    return {"model": model, "key": key,
            "files": {path: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for path, data in files.items()}}


def parse_entry(value, model: str, key: str) -> dict:
    """The entry's structure checked against the request; raises BadEntry."""
    if not isinstance(value, dict) or not isinstance(value.get("files"), dict):
        raise BadEntry("is not a build entry (it has no files table)")
    if value.get("model") != model or value.get("key") != key:
        raise BadEntry(f"is for model {str(value.get('model'))[:40]!r} and key {str(value.get('key'))[:12]}, "
                       f"not {model!r} and {key[:12]}")
    files = value["files"]
    for path, record in files.items():
        if not (path in FIXED_FILES or path in CLASS_FILES or CHUNK_FILE.fullmatch(path)):
            raise BadEntry(f"names the file {path[:60]!r}, which no build writes")
        if not (isinstance(record, dict) and isinstance(record.get("sha256"), str) and SHA256.fullmatch(record["sha256"])
                and type(record.get("size")) is int and 0 <= record["size"] <= (1 << 40)):
            raise BadEntry(f"has no valid sha256 and size for {path}")
        chunk = CHUNK_FILE.fullmatch(path)
        if (chunk and not record["sha256"].startswith(chunk.group(1))) or (not chunk and record["size"] > MAX_TEXT_BYTES):
            raise BadEntry(f"records a hash or size that cannot be {path}'s")
    if not set(FIXED_FILES) <= set(files):
        raise BadEntry(f"lacks {', '.join(sorted(set(FIXED_FILES) - set(files)))}")
    return value


def check_files(entry: dict, files: dict[str, bytes], model) -> None:
    """Raise BadEntry unless `files` are exactly the entry's and what this build of `model` would write."""
    if set(files) != set(entry["files"]):
        raise BadEntry("does not match its files")
    for path, data in files.items():
        if len(data) != entry["files"][path]["size"] or hashlib.sha256(data).hexdigest() != entry["files"][path]["sha256"]:
            raise BadEntry(f"records another hash for {path}")
    try:
        shared = program_from_js(files["index.js"].decode())
        manifest = json.loads(files["manifest.json"])
        names = shared["classes"]
        if not names or len(set(names)) != len(names) or not set(names) <= set(PROGRAMS) or \
                set(manifest.get("classes", {})) != set(names):
            raise BadEntry("names device classes that no build makes")
        parts = {name: program_from_js(files[class_file(name)].decode()) for name in names}
        js, dts = render_js(shared, runtime_needs(shared, parts)).encode(), render_dts(shared).encode()
        if files["index.js"] != js or files["index.d.ts"] != dts:
            raise BadEntry("has an index.js or index.d.ts that is not Kuma's rendering of its program")
        for name, part in parts.items():
            if files[class_file(name)] != render_class_js(part).encode():
                raise BadEntry(f"has a {class_file(name)} that is not Kuma's rendering of its program")
            _check_program(join_program(shared, part), name, manifest, entry, model)
        if set(entry["files"]) != set(FIXED_FILES) | {chunk_file(c["id"]) for c in shared["chunks"]} | {class_file(n) for n in names}:
            raise BadEntry("lists files other than its program's")
    except (ValueError, TypeError, KeyError, AttributeError, IndexError):  # UnicodeDecodeError is a ValueError
        raise BadEntry("has an index.js or manifest.json that Kuma did not write")


def _check_program(program: dict, device_class: str, manifest: dict, entry: dict, model) -> None:
    def specs(items):
        return [{"name": s["name"], "shape": s["shape"], "dtype": s["dtype"]} for s in items]

    inputs, outputs = specs(program["inputs"]), specs(program["outputs"])
    wanted = sorted((s.name, list(s.shape), "float32" if s.dtype == "float32" else "int32") for s in model.inputs)
    if program.get("model") != model.name or sorted((s["name"], s["shape"], s["dtype"]) for s in inputs) != wanted:
        raise BadEntry("holds a program for another model or other inputs")
    if any(s["dtype"] not in TS_ARRAY for s in inputs + outputs):
        raise BadEntry("holds a program with unknown dtypes")
    if not all(isinstance(c["id"], str) and CHUNK_ID.fullmatch(c["id"]) for c in program["chunks"]):
        raise BadEntry("holds a program whose chunks have no valid id")
    files = [chunk_file(c["id"]) for c in program["chunks"]]
    if not all(file in entry["files"] and entry["files"][file]["size"] == c["size"] for file, c in zip(files, program["chunks"])):
        raise BadEntry("lists files other than its program's chunks")
    chunks = [{"file": file, "size": c["size"], "sha256": entry["files"][file]["sha256"]} for file, c in zip(files, program["chunks"])]
    if chunks_digest(chunks[i]["sha256"] for i in used_chunks(expand_copies(program))) != program["digest"]:
        raise BadEntry("holds a program whose digest is not its chunks'")
    kernels = [{"name": k["name"], "sha256": hashlib.sha256(k["code"].encode()).hexdigest()} for k in program["kernels"]]
    expected = {"model": model.name, "key": entry["key"], "inputs": inputs, "outputs": outputs, "chunks": chunks}
    own = manifest.get("classes", {}).get(device_class, {}) if isinstance(manifest, dict) else {}
    if not isinstance(manifest, dict) or manifest.get("compiler", {}).get("name") != "kuma-build" or \
            any(manifest.get(field) != value for field, value in expected.items()) or \
            own.get("kernels") != kernels or own.get("dispatches") != len(program["dispatches"]):
        raise BadEntry("has a manifest.json that does not match its program")
    pieces = {p.get("chunk") for w in manifest.get("weights", []) for p in w.get("pieces", [])}
    if not pieces <= {c["file"] for c in chunks}:
        raise BadEntry("has a manifest.json naming chunks it lacks")


# --- signatures ----------------------------------------------------------------------
def sign(entry: dict, secret: bytes) -> dict:
    return {**entry, "hmac": _mac(entry, secret)}


def signature_ok(entry: dict, secret: bytes) -> bool:
    mac = entry.get("hmac")
    return isinstance(mac, str) and hmac.compare_digest(mac, _mac(entry, secret))


def _mac(entry: dict, secret: bytes) -> str:
    body = json.dumps({k: v for k, v in entry.items() if k != "hmac"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
