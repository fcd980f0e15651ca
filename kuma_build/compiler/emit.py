"""Emit: write a model's output folder atomically.

    <out_dir>/<model>/index.js        runtime + this model's kernels + dispatch plan
    <out_dir>/<model>/index.d.ts      typed inputs and outputs
    <out_dir>/<model>/manifest.json   versions, specs, kernels, weight table with hashes
    <out_dir>/<model>/weights/<hash>.bin

The folder is written by outfolder.write_output, all at once.
"""

import hashlib
from functools import cached_property
import json
import re
from dataclasses import dataclass

import torch

from kuma_build import __version__
from kuma_build.compiler import precision
from kuma_build.compiler.ir.sizes import to_json
from kuma_build.compiler.plan import Plan
from kuma_build.errors import KumaError
from kuma_build.jsmodule import render_class_js, render_dts, render_js, runtime_needs
from kuma_build.outfolder import ID_HEX, chunk_file, chunk_id, chunks_digest, class_file, compact_copies, split_program, used_chunks
from kuma_build.shortnames import short_kernels

JS_DTYPE = {"f32": "float32", "i32": "int32", "bool": "int32"}


@dataclass
class Chunk:
    data: bytes

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def file(self) -> str:
        return chunk_file(self.sha256)


def buffer_bytes(buf) -> bytes:
    """A constant buffer as the GPU stores it: little-endian f32 or i32, or a packed f16/int8 weight."""
    return precision.encode(buf)


def pack_classes(plans: list[Plan], chunk_size: int) -> tuple[list[Chunk], list[list]]:
    """The weight chunks of every device class's plan (each chunk at most chunk_size), and each plan's
    copies [chunk, chunk offset, buffer, buffer offset, size] out of them.

    A weight goes in once. One that every plan has (the same bytes: the n-th weight of those bytes
    in each) lies in chunks they all read; one that only some plans have (a class whose passes
    treated it otherwise: "gpu"'s merged linear layers against "cpu"'s separate ones) in chunks only
    those read: each class downloads its own weights and nothing else, and the folder holds each once.
    Groups of the same plans are packed one after the other (every plan's first), each in its first
    plan's order, which is first use. A tensor is split only when it alone exceeds the cap. Chunks
    also end at "anchor" layers (1 in 4, picked by a hash of the layer's name), so when one layer
    changes size the chunking realigns at the next anchor: the other layers' chunk files keep their
    bytes and hashes.
    """
    rows = []  # per plan: (buf, its first buffer index, its bytes, key: (SHA-256, n-th of those bytes in the plan))
    for plan in plans:
        seen: dict[bytes, int] = {}
        own = []
        for buf, index in zip(plan.weights, plan.weight_buffer):
            data = buffer_bytes(buf)
            sha = hashlib.sha256(data).digest()
            seen[sha] = seen.get(sha, -1) + 1
            own.append((buf, index, data, (sha, seen[sha])))
        rows.append(own)
    users: dict[tuple, frozenset] = {}  # key -> the plans that have it
    for k, own in enumerate(rows):
        for *_, key in own:
            users[key] = users.get(key, frozenset()) | {k}
    everyone = frozenset(range(len(plans)))
    groups = [everyone] + [g for g in dict.fromkeys(users[key] for own in rows for *_, key in own) if g != everyone]

    chunks, current, placed = [], bytearray(), {}  # placed: key -> [(chunk, chunk offset, start in the weight, size)]

    def flush():
        nonlocal current
        if current:
            chunks.append(Chunk(bytes(current)))
            current = bytearray()

    for group in groups:
        flush()
        layer = None
        for buf, _, data, key in rows[min(group)]:
            if users[key] != group or key in placed:
                continue
            buf_layer = buf.name.rsplit(".", 1)[0]
            if buf_layer != layer and _is_anchor(buf_layer):
                flush()
            layer = buf_layer
            if len(data) > chunk_size:
                flush()
                placed[key] = [(len(chunks) + n, 0, start, min(chunk_size, len(data) - start))
                               for n, start in enumerate(range(0, len(data), chunk_size))]
                chunks += [Chunk(data[start:start + chunk_size]) for start in range(0, len(data), chunk_size)]
                continue
            if len(current) + len(data) > chunk_size:
                flush()
            placed[key] = [(len(chunks), len(current), 0, len(data))]
            current += data
    flush()

    unique, at = [], {}  # chunks of the same bytes (by chance) once
    for chunk in chunks:
        at.setdefault(chunk.sha256, len(unique))
        if at[chunk.sha256] == len(unique):
            unique.append(chunk)
    copies = [[[at[chunks[chunk].sha256], offset + within, *target]
               for buf, index, _, key in own for chunk, offset, start, size in placed[key]
               for within, target in page_copies(buf, index, start, size)] for own in rows]
    if len({c.file for c in unique}) < len(unique):  # SHA-256s beginning alike: 1 in 10^11 builds of 60 chunks
        raise KumaError(f"two weight chunks of this model have SHA-256s with the same first {ID_HEX} hex digits, which "
                        "name their files; change chunk_size in kuma.toml a little and build again.")
    return unique, copies


def page_copies(buf, index: int, start: int, size: int):
    """(offset in the piece, [buffer, buffer offset, size]) for bytes start..start+size of a weight
    whose first buffer is `index`: one copy, or one per page a paged weight's piece spans."""
    if buf.pages == 1:
        yield 0, [index, start, size]
        return
    page_bytes = (4 if buf.transit == "f32" else 2) * buf.page  # a widened weight's pages are sent as f16
    at = start
    while at < start + size:
        page, offset = divmod(at, page_bytes)
        length = min(start + size, (page + 1) * page_bytes) - at
        yield at - start, [index + page, offset, length]
        at += length


def _is_anchor(layer: str) -> bool:
    return hashlib.sha256(layer.encode()).digest()[0] % 4 == 0


# a WGSL token for shipped(): a run of whitespace, a word (names, numbers, member access) or one character
WGSL_TOKEN = re.compile(r"\s+|[A-Za-z0-9_.]+|.")
WGSL_OPERATOR = set("+-*/%<>=!&|^")


def shipped(wgsl: str) -> str:
    """WGSL as index.js ships it: no comments, no indentation and no space that no token needs
    (one stays between two words, and between two operator characters so that `a - -b` never
    becomes `a--b`): 5% of a class module's gzip size. Lines stay, so a compile error's line number
    still means something. The kernel cache keeps the readable source."""
    lines = []
    for line in wgsl.splitlines():
        tokens = WGSL_TOKEN.findall(line.split("//", 1)[0])  # WGSL has no strings: // is a comment
        kept = ""
        for i, token in enumerate(tokens):
            if not token.isspace():
                kept += token
            elif kept and i + 1 < len(tokens) and needs_space(kept[-1], tokens[i + 1][0]):
                kept += " "
        if kept:
            lines.append(kept)
    return "\n".join(lines)


def needs_space(before: str, after: str) -> bool:
    def word(char):
        return char.isalnum() or char in "_."
    return (word(before) and word(after)) or (before in WGSL_OPERATOR and after in WGSL_OPERATOR)


def program_dict(name: str, plan: Plan, graph, specs, chunks, copies, native_f16: bool = False) -> dict:
    """The program of one class. native_f16: an f16 build's "<class>-f16" program (devices.F16_PROGRAM),
    which the runtime takes only on a device with shader-f16 and subgroup matrices: a kernel that
    reads an f16 weight ships its shader-f16 code as its code (the one reading the weight by words
    would never compile there), and its subgroup-matrix variant where it has one. Otherwise the
    kernels' plain code (an f16 build's widened program reads its memory-bound f16 weights by words)."""
    # the dims (kuma.toml order: their fields in the dims uniform), only for a model that has any
    dims = {"dims": {d.name: {"min": d.min, "max": d.max} for d in graph.dims}} if graph.dims else {}
    return {
        "model": name,
        **dims,
        "inputs": [{"name": n, "shape": list(specs[n].shape), "dtype": "int32" if specs[n].dtype != "float32" else "float32",
                    "buffer": plan.input_buffer[n]} for n in graph.inputs],
        "outputs": [{"name": n, "shape": [to_json(s) for s in v.shape], "dtype": JS_DTYPE[v.dtype], "buffer": plan.output_buffer[n]}
                    for n, v in graph.outputs.items()],
        "buffers": plan.buffers,
        # "f16m": the kernel's variant on subgroup matrices (the runtime picks it where the device
        # offers them, always in a browser that takes the program; wgpu-py runs "code", `kuma verify`)
        "kernels": [{"name": k.name, "code": shipped((native_f16 and k.code_f16) or k.code),
                     **({"f16m": shipped(k.code_matrix)} if k.code_matrix and native_f16 else {})} for k in plan.kernels],
        # a 4th entry, {dim: [low, high]}: the dispatch runs only while each dim is in its range
        "dispatches": [[k, bufs, list(wg), *([when] if when else [])] for k, bufs, wg, when in plan.dispatches],
        # id: each chunk's SHA-256 must begin with it before the runtime uses its bytes; its file and
        # cache entry are named by it; digest: all of the SHA-256s of the chunks this class uses at
        # once (outfolder.chunk_id, used_chunks)
        "chunks": [{"size": len(c.data), "id": chunk_id(c.sha256)} for c in chunks],
        "digest": chunks_digest(chunks[i].sha256 for i in used_chunks(copies)),
        # a copy that follows from the one before it is its bare buffer index (outfolder.compact_copies)
        "copies": compact_copies(copies, [{"size": len(c.data)} for c in chunks], plan.buffers),
        # buffers forward() mutates, kept on the GPU between runs; init: the buffer holding the
        # initial value, copied in at load and on reset() (null: zeros)
        "state": plan.state,
        # the workgroup memory of its hungriest kernel, where some kernel takes more than WebGPU's
        # default (attention_matrix.py): the runtime asks the device for it, or takes another program
        **({"workgroupBytes": most} if (most := max((k.workgroup_bytes for k in plan.kernels), default=0)) else {}),
    }


def manifest_dict(programs: dict[str, dict], plan: Plan, chunks, copies, stats: dict[str, dict], key: str) -> dict:
    """What the build made, for people and tools (never read by the browser): the weights as the first
    class's plan packs them, and for each device class its kernels, dispatch count and stats."""
    weights = []
    for buf, index in zip(plan.weights, plan.weight_buffer):
        pieces = [c for c in copies if index <= c[2] < index + buf.pages]
        # the weight's bytes as packed into the chunks (encoding it again would quantise twice)
        data = b"".join(chunks[chunk].data[offset:offset + size] for chunk, offset, _, _, size in pieces)
        # a widened weight's bytes are f16 (its storage in the "-f16" program, when there is one)
        storage = "f16" if buf.transit == "f16" else buf.storage
        # blocked: stored in 16 x 16 blocks of rows this long (passes/matrix_blocks.py)
        weights.append({"name": buf.name, "dtype": buf.dtype, "storage": storage, **({"blocked": buf.blocked} if buf.blocked else {}),
                        "numel": buf.numel, "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "pieces": [{"chunk": chunks[c[0]].file, "offset": c[1], "size": c[4]} for c in pieces]})
    program = next(iter(programs.values()))
    first = next(iter(stats.values()))
    return {
        "compiler": {"name": "kuma-build", "version": __version__, "torch": torch.__version__},
        "key": key,  # the build cache's key of everything this output depends on
        "model": program["model"],
        "inputs": [{k: s[k] for k in ("name", "shape", "dtype")} for s in program["inputs"]],
        "outputs": [{k: s[k] for k in ("name", "shape", "dtype")} for s in program["outputs"]],
        # each kernel's hash as its class module ships it (with short names, shortnames.py)
        "classes": {name: {"kernels": [{"name": k["name"], "sha256": hashlib.sha256(k["code"].encode()).hexdigest()} for k in short_kernels(p["kernels"])],
                           "dispatches": len(p["dispatches"]), "stats": stats[name]} for name, p in programs.items()},
        "weights": weights,
        "chunks": [{"file": c.file, "size": len(c.data), "sha256": c.sha256} for c in chunks],
        "stats": {**first, "weight_bytes": sum(len(c.data) for c in chunks), "chunks": len(chunks)},
    }


def output_files(programs: dict[str, dict], manifest: dict, chunks) -> dict[str, bytes]:
    """Every file of a model's output folder, by relative path: index.js with what the device
    classes share, one module per class (outfolder.split_program), index.d.ts, the manifest, the chunks."""
    shared, parts = split_program(programs)
    files = {chunk.file: chunk.data for chunk in chunks}
    files["index.js"] = render_js(shared, runtime_needs(shared, parts)).encode()
    files.update({class_file(name): render_class_js(part).encode() for name, part in parts.items()})
    files["index.d.ts"] = render_dts(shared).encode()
    files["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    return files
