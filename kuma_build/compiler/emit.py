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
from dataclasses import dataclass

import torch

from kuma_build import __version__
from kuma_build.compiler import precision
from kuma_build.compiler.plan import Plan
from kuma_build.jsmodule import render_dts, render_js

JS_DTYPE = {"f32": "float32", "i32": "int32", "bool": "int32"}


@dataclass
class Chunk:
    data: bytes

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def file(self) -> str:
        return f"weights/{self.sha256[:20]}.bin"


def buffer_bytes(buf) -> bytes:
    """A constant buffer as the GPU stores it: little-endian f32 or i32, or a packed f16/int8 weight."""
    return precision.encode(buf)


def pack_weights(plan: Plan, chunk_size: int):
    """Chunks (each at most chunk_size) and copies [chunk, chunk offset, buffer, buffer offset, size].

    Weights go in first-use order and a tensor is split only when it alone exceeds
    the cap. Chunks also end at "anchor" layers (1 in 4, picked by a hash of the
    layer's name), so when one layer changes size the chunking realigns at the next
    anchor: the other layers' chunk files keep their bytes and hashes.
    """
    chunks, copies, current = [], [], bytearray()

    def flush():
        nonlocal current
        if current:
            chunks.append(Chunk(bytes(current)))
            current = bytearray()

    layer = None
    for buf, index in zip(plan.weights, plan.weight_buffer):
        data = buffer_bytes(buf)
        buf_layer = buf.name.rsplit(".", 1)[0]
        if buf_layer != layer and _is_anchor(buf_layer):
            flush()
        layer = buf_layer
        if len(data) > chunk_size:
            flush()
            for start in range(0, len(data), chunk_size):
                piece = data[start:start + chunk_size]
                copies.append([len(chunks), 0, index, start, len(piece)])
                chunks.append(Chunk(piece))
            continue
        if len(current) + len(data) > chunk_size:
            flush()
        copies.append([len(chunks), len(current), index, 0, len(data)])
        current += data
    flush()
    return chunks, copies


def _is_anchor(layer: str) -> bool:
    return hashlib.sha256(layer.encode()).digest()[0] % 4 == 0


def shipped(wgsl: str) -> str:
    """WGSL as index.js ships it: without indentation, 2-5% of a model's gzip size (the kernel
    cache keeps the indented source)."""
    return "\n".join(line.lstrip() for line in wgsl.splitlines())


def program_dict(name: str, plan: Plan, graph, specs, chunks, copies) -> dict:
    return {
        "format": 1,
        "model": name,
        "inputs": [{"name": n, "shape": list(specs[n].shape), "dtype": "int32" if specs[n].dtype != "float32" else "float32",
                    "buffer": plan.input_buffer[n]} for n in graph.inputs],
        "outputs": [{"name": n, "shape": list(v.shape), "dtype": JS_DTYPE[v.dtype], "buffer": plan.output_buffer[n]}
                    for n, v in graph.outputs.items()],
        "buffers": plan.buffers,
        # "f16": the kernel's variant for devices with shader-f16 (the runtime picks at load)
        "kernels": [{"name": k.name, "code": shipped(k.code), **({"f16": shipped(k.code_f16)} if k.code_f16 else {})} for k in plan.kernels],
        "dispatches": [[k, bufs, list(wg)] for k, bufs, wg in plan.dispatches],
        # sha256: the runtime checks each chunk against it before using its bytes, and caches by it
        "chunks": [{"file": c.file, "size": len(c.data), "sha256": c.sha256} for c in chunks],
        "copies": copies,
        # buffers forward() mutates, kept on the GPU between runs; init: the buffer holding the
        # initial value, copied in at load and on reset() (null: zeros)
        "state": plan.state,
    }


def manifest_dict(program: dict, plan: Plan, chunks, copies, stats: dict, key: str) -> dict:
    weights = []
    for buf, index in zip(plan.weights, plan.weight_buffer):
        pieces = [c for c in copies if c[2] == index]
        # the weight's bytes as packed into the chunks (encoding it again would quantise twice)
        data = b"".join(chunks[chunk].data[offset:offset + size] for chunk, offset, _, _, size in pieces)
        weights.append({"name": buf.name, "dtype": buf.dtype, "storage": buf.storage, "numel": buf.numel, "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "pieces": [{"chunk": chunks[c[0]].file, "offset": c[1], "size": c[4]} for c in pieces]})
    return {
        "compiler": {"name": "kuma-build", "version": __version__, "torch": torch.__version__},
        "key": key,  # the build cache's key of everything this output depends on
        "model": program["model"],
        "inputs": [{k: s[k] for k in ("name", "shape", "dtype")} for s in program["inputs"]],
        "outputs": [{k: s[k] for k in ("name", "shape", "dtype")} for s in program["outputs"]],
        "kernels": [{"name": k["name"], "sha256": hashlib.sha256(k["code"].encode()).hexdigest()} for k in program["kernels"]],
        "dispatches": len(program["dispatches"]),
        "weights": weights,
        "chunks": [{"file": c.file, "size": len(c.data), "sha256": c.sha256} for c in chunks],
        "stats": stats,
    }


def output_files(program: dict, manifest: dict, chunks) -> dict[str, bytes]:
    """Every file of a model's output folder, by relative path."""
    files = {chunk.file: chunk.data for chunk in chunks}
    files["index.js"] = render_js(program).encode()
    files["index.d.ts"] = render_dts(program).encode()
    files["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    return files
