"""Run a compiled program on the local WebGPU adapter through wgpu-py.

This mirrors templates/runtime.js step for step (same WGSL, same buffers,
same dispatch list, one compute pass, state buffers set at load and by reset(),
outputs read back only when asked for), so `kuma verify` and the tests check
exactly what the browser will run.

A model with dims (kuma.toml `dims`, docs/design.md, Dimensions) takes inputs of any size in their
ranges: run() reads each dim's value from the inputs' shapes, writes them to the dims uniform
buffer, evaluates the workgroup counts that depend on them (skipping a dispatch with none) and
reads back each output at its current size. A dispatch that names ranges of dims (a product's
kernel for few rows) runs only while the dims are in them.
"""

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from kuma_build.errors import KumaError
from kuma_build.outfolder import WIDEN, chunk_file, chunks_digest, expand_copies, used_chunks

NUMPY_DTYPES = {"float32": np.float32, "int32": np.int32}
TIMESTAMP_FEATURES = ("timestamp-query", "timestamp-query-inside-passes")
_device = None


def adapter_and_device():
    """One shared device per process. The adapter must be a real Vulkan/Metal/D3D12 one."""
    global _device
    if _device is None:
        if not os.environ.get("XDG_RUNTIME_DIR"):  # silences a harmless warning from the Vulkan loader
            os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="kuma-xdg-")
        try:
            import wgpu
            adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
        except Exception as e:  # no driver at all
            raise KumaError(f"no WebGPU adapter: {e}. On Debian/Ubuntu install Mesa's Vulkan driver: apt-get install mesa-vulkan-drivers.")
        if adapter is None or adapter.info.get("backend_type") not in ("Vulkan", "Metal", "D3D12"):
            backend = adapter.info.get("backend_type") if adapter else "none"
            raise KumaError(f"the WebGPU adapter uses backend {backend}, not Vulkan; wgpu fell back because no Vulkan driver is installed. "
                            "On Debian/Ubuntu: apt-get install mesa-vulkan-drivers.")
        limits = adapter.limits
        wanted = {"max-storage-buffer-binding-size": limits["max-storage-buffer-binding-size"],
                  "max-buffer-size": limits["max-buffer-size"],
                  "max-storage-buffers-per-shader-stage": min(limits["max-storage-buffers-per-shader-stage"], 10),
                  # a "-f16" program's attention on subgroup matrices takes more than the default (program["workgroupBytes"])
                  "max-compute-workgroup-storage-size": limits["max-compute-workgroup-storage-size"]}
        # shader-f16 when the adapter has it, for an f16 build's "-f16" program (the browser runtime
        # takes that program only with the feature); timestamp queries for `kuma bench`
        features = [f for f in ("shader-f16", *TIMESTAMP_FEATURES) if f in adapter.features]
        _device = (adapter, adapter.request_device_sync(required_limits=wanted, required_features=features))
    return _device


# lavapipe reports 32 KB of workgroup memory but runs more, and wgpu-native does not check it: the
# tests of attention_matrix.py's BERT-shaped kernel (45 KB) lift the check, nothing else does
CHECK_WORKGROUP_BYTES = True


def why_not_here(program: dict) -> str | None:
    """Why the local adapter cannot run the program, None where it can. An f16 build's "-f16" program
    reads its weights natively (kernels with `enable f16;`), which needs shader-f16 (browsers take it
    only with it), and may take more workgroup memory than the default (its workgroupBytes; browsers
    take the plain program where the device has less)."""
    _, device = adapter_and_device()
    if "shader-f16" not in device.features and any(k["code"].startswith("enable f16;") for k in program["kernels"]):
        return "this adapter has no shader-f16, which the devices that take this program have (Mesa's lavapipe has it)"
    needed, allowed = program.get("workgroupBytes", 0), device.limits["max-compute-workgroup-storage-size"]
    if CHECK_WORKGROUP_BYTES and needed > allowed:
        return (f"its kernels take {needed} bytes of workgroup memory and this adapter allows {allowed}; "
                "browsers take the model's plain program on such a device")
    return None


class GpuModel:
    def __init__(self, program: dict, folder: Path | None = None, chunks: list[bytes] | None = None, matrix: bool = False):
        """matrix: run the kernels' subgroup-matrix variants where they have one (an f16 build's "-f16"
        program, whose code needs shader-f16 too); wgpu offers no subgroup matrices, so only a build with
        gemm_matrix.py's emulation runs them here (the tests)."""
        import wgpu
        self.program = program
        _, device = adapter_and_device()
        if reason := why_not_here(program):
            raise KumaError(f"model {program['model']}'s program for devices with tensor cores cannot run on this WebGPU adapter: "
                            f"{reason}.")
        self.device = device
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC
        uniform = wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST  # the dims' values
        self.buffers = [device.create_buffer(size=max(4, -(-gpu_bytes(b) // 4) * 4), usage=uniform if b["kind"] == "dims" else usage)
                        for b in program["buffers"]]
        self.dims = program.get("dims", {})  # name -> {"min", "max"}, in the uniform's order
        self.values = None  # the dims' values the uniform holds
        pipelines = []
        for kernel in program["kernels"]:
            code = (matrix and kernel.get("f16m")) or kernel["code"]
            module = device.create_shader_module(label=kernel["name"], code=code)
            pipelines.append(device.create_compute_pipeline(label=kernel["name"], layout="auto", compute={"module": module, "entry_point": "main"}))
        if chunks is None:
            chunks = read_chunks(folder, program)
        for chunk, chunk_offset, buffer, buffer_offset, size in expand_copies(program):
            data = memoryview(chunks[chunk])[chunk_offset:chunk_offset + size]
            if program["buffers"][buffer]["kind"] == WIDEN:  # f16 values sent, f32 on the GPU
                data, buffer_offset = np.frombuffer(data, "<f2").astype("<f4").tobytes(), 2 * buffer_offset
            device.queue.write_buffer(self.buffers[buffer], buffer_offset, data)
        self.binds = []
        for kernel, bound, groups, *when in program["dispatches"]:
            pipeline = pipelines[kernel]
            group = device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
                {"binding": i, "resource": {"buffer": self.buffers[b], "offset": 0, "size": self.buffers[b].size}} for i, b in enumerate(bound)])
            self.binds.append((pipeline, group, groups, when[0] if when else None))
        self.reset()

    def reset(self) -> None:
        """Give every state buffer its initial value (a copy of its init buffer, or zeros)."""
        encoder = self.device.create_command_encoder()
        for state in self.program.get("state", []):
            target = self.buffers[state["buffer"]]
            if state["init"] is None:
                encoder.clear_buffer(target)
            else:
                encoder.copy_buffer_to_buffer(self.buffers[state["init"]], 0, target, 0, target.size)
        self.device.queue.submit([encoder.finish()])

    def output_buffer(self, name: str):
        """The GPU buffer holding output `name` of the latest run (the next run overwrites it)."""
        return self.buffers[next(o["buffer"] for o in self.program["outputs"] if o["name"] == name)]

    def run(self, inputs: dict, timestamps: str | None = None, read: list[str] | None = None) -> dict[str, np.ndarray]:
        """An input is an array, or a GPU buffer (wgpu) holding it, copied on the GPU. read: the
        outputs to read back (default all); the others stay on the GPU (output_buffer).
        timestamps="pass" stamps the compute pass's start and end, "dispatch" the start and each
        dispatch's end (needs timestamp-query-inside-passes); self.stamps then holds them, in ns."""
        import wgpu
        self._set_dims(inputs)
        encoder = self.device.create_command_encoder()
        for spec in self.program["inputs"]:
            given, target = inputs[spec["name"]], self.buffers[spec["buffer"]]
            if isinstance(given, wgpu.GPUBuffer):
                encoder.copy_buffer_to_buffer(given, 0, target, 0, min(given.size, target.size))
                continue
            array = np.ascontiguousarray(given, dtype=NUMPY_DTYPES[spec["dtype"]])
            assert array.size == int(np.prod(self._shape(spec["shape"]))), f"input {spec['name']} has the wrong size"
            self.device.queue.write_buffer(target, 0, array.tobytes())
        queries = timestamps and self._timestamp_queries(2 if timestamps == "pass" else len(self.binds) + 1)
        writes = {"query_set": queries, "beginning_of_pass_write_index": 0, "end_of_pass_write_index": 1}
        compute = encoder.begin_compute_pass(timestamp_writes=writes if timestamps == "pass" else None)
        each_dispatch = timestamps == "dispatch"
        if each_dispatch:
            from wgpu.backends.wgpu_native.extras import write_timestamp
            write_timestamp(compute, queries, 0)
        self._record(compute, (lambda i: write_timestamp(compute, queries, i)) if each_dispatch else None)
        compute.end()
        stamps = self._submit(encoder, queries)
        if queries:
            self.stamps = stamps
        outputs = {}
        for spec in self.program["outputs"]:
            if read is not None and spec["name"] not in read:
                continue
            shape = self._shape(spec["shape"])
            size = int(np.prod(shape))
            raw = self.device.queue.read_buffer(self.buffers[spec["buffer"]], 0, max(4, 4 * size))
            outputs[spec["name"]] = np.frombuffer(raw, dtype=NUMPY_DTYPES[spec["dtype"]])[:size].reshape(shape).copy()
        return outputs

    def _set_dims(self, inputs: dict) -> None:
        """Find each dim's value from the inputs' shapes (docs/design.md, Dimensions) and write them to the
        dims uniform when they changed."""
        if not self.dims:
            return
        values: dict[str, int] = {}
        for spec in self.program["inputs"]:
            given = inputs[spec["name"]]
            if not any(isinstance(s, str) for s in spec["shape"]) or not hasattr(given, "shape"):
                continue  # a GPU buffer: another input gives its dims
            shape = np.shape(given)
            if len(shape) != len(spec["shape"]):
                raise KumaError(f"input {spec['name']} has shape {list(shape)}, but the model takes {spec['shape']}.")
            for size, declared in zip(shape, spec["shape"]):
                if isinstance(declared, str):
                    low, high = self.dims[declared]["min"], self.dims[declared]["max"]
                    if not low <= size <= high:
                        raise KumaError(f"input {spec['name']} sets the dim {declared} to {size}, outside its range [{low}, {high}].")
                    if values.setdefault(declared, size) != size:
                        raise KumaError(f"input {spec['name']} sets the dim {declared} to {size}, but another input set it to "
                                        f"{values[declared]} (range [{low}, {high}]).")
                elif size != declared:
                    raise KumaError(f"input {spec['name']} has shape {list(shape)}, but the model takes {spec['shape']}.")
        missing = [name for name in self.dims if name not in values]
        if missing:
            raise KumaError(f"no input array gives the dim {', '.join(missing)}; pass an array (not a GPU buffer) for one input that has it.")
        if values != self.values:
            words = np.zeros(-(-len(self.dims) // 4) * 4, dtype=np.uint32)
            words[:len(self.dims)] = [values[name] for name in self.dims]
            buffer = next(self.buffers[i] for i, b in enumerate(self.program["buffers"]) if b["kind"] == "dims")
            self.device.queue.write_buffer(buffer, 0, words.tobytes())
            self.values = values

    def _size(self, size) -> int:
        """A program size (a number, or terms [coef, name, ...]) at the current dims."""
        if isinstance(size, int):
            return size
        return sum(coef * int(np.prod([self.values[name] for name in names], dtype=np.int64)) for coef, *names in size)

    def _shape(self, shape) -> tuple[int, ...]:
        """An input's or output's shape at the current dims (an input names a dim; an output has terms)."""
        return tuple(self.values[s] if isinstance(s, str) else self._size(s) for s in shape)

    def _groups(self, groups) -> list[int]:
        return [g if isinstance(g, int) else -(-self._size(g["size"]) // g["per"]) for g in groups]

    def time_repeats(self, inputs: dict[str, np.ndarray], repeats: int) -> list[float]:
        """GPU ns of each of `repeats` back-to-back runs of the dispatch list in one compute pass
        (needs timestamp-query-inside-passes). Nothing waits on the host between them, so the GPU
        stays busy: an idle GPU lowers its clocks between runs that read back their outputs."""
        from wgpu.backends.wgpu_native.extras import write_timestamp
        self.run(inputs)
        queries = self._timestamp_queries(repeats + 1)
        encoder = self.device.create_command_encoder()
        compute = encoder.begin_compute_pass()
        write_timestamp(compute, queries, 0)
        for repeat in range(1, repeats + 1):
            self._record(compute)
            write_timestamp(compute, queries, repeat)
        compute.end()
        return np.diff(self._submit(encoder, queries)).tolist()

    def _record(self, compute, after=None) -> None:
        """Every dispatch of the plan into the compute pass; after(i) follows the i-th (from 1)."""
        for i, (pipeline, group, groups, when) in enumerate(self.binds, 1):
            counts = self._groups(groups)
            runs = not when or all(low <= self.values[name] <= high for name, (low, high) in when.items())
            if runs and 0 not in counts:  # a dim's value can leave a dispatch nothing to do, or to another kernel
                compute.set_pipeline(pipeline)
                compute.set_bind_group(0, group)
                compute.dispatch_workgroups(*counts)
            if after:
                after(i)

    def _submit(self, encoder, queries) -> list[float] | None:
        """Submit the encoder; with queries, resolve them first and return the stamps in ns."""
        if queries:
            encoder.resolve_query_set(queries, 0, queries.count, self._resolved, 0)
        self.device.queue.submit([encoder.finish()])
        if not queries:
            return None
        ticks = np.frombuffer(self.device.queue.read_buffer(self._resolved, 0, 8 * queries.count), dtype=np.uint64)
        return (ticks.astype(np.float64) * timestamp_period(self.device)).tolist()

    def _timestamp_queries(self, count: int):
        """A timestamp query set of `count` stamps and the buffer they resolve into, made once per count."""
        import wgpu
        if getattr(self, "_queries", None) is None or self._queries.count != count:
            self._queries = self.device.create_query_set(type=wgpu.QueryType.timestamp, count=count)
            self._resolved = self.device.create_buffer(size=8 * count, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
        return self._queries

    def release(self) -> None:
        for b in self.buffers:
            b.destroy()


def gpu_bytes(buffer: dict) -> int:
    """A program buffer's size on the GPU: a widened weight's (outfolder.WIDEN) is twice its f16 bytes."""
    return 2 * buffer["size"] if buffer["kind"] == WIDEN else buffer["size"]


def run_program(program: dict, inputs: dict[str, np.ndarray], folder: Path | None = None, chunks: list[bytes] | None = None,
                matrix: bool = False) -> dict[str, np.ndarray]:
    """Load a program (weights from its folder, or the chunks given), run it once, release it."""
    gpu = GpuModel(program, folder, chunks, matrix)
    try:
        return gpu.run(inputs)
    finally:
        gpu.release()


def read_chunks(folder: Path, program: dict) -> list[bytes]:
    """The bytes of the weight chunks the program uses (None for another class's), checked as the
    browser runtime checks them: each one's SHA-256 against its id, then all of them against the
    program's digest."""
    datas, digests = [None] * len(program["chunks"]), []
    for i in used_chunks(expand_copies(program)):
        file = folder / chunk_file(program["chunks"][i]["id"])
        datas[i] = file.read_bytes()
        digests.append(hashlib.sha256(datas[i]).hexdigest())
        if not digests[-1].startswith(program["chunks"][i]["id"]):
            raise changed_after_build(file)
    if chunks_digest(digests) != program["digest"]:
        raise changed_after_build(folder / "weights")
    return datas


def changed_after_build(path: Path) -> KumaError:
    return KumaError(f"{path} does not match its build (SHA-256 differs): the output folder was changed "
                     "after the build; run `kuma build --force` to write it again.")


def timestamp_period(device) -> float:
    """Nanoseconds per timestamp tick (wgpu-native resolves raw ticks; 1.0 on most drivers)."""
    try:
        from wgpu.backends.wgpu_native._api import libf
        return float(libf.wgpuQueueGetTimestampPeriod(device.queue._internal))
    except (ImportError, AttributeError):
        return 1.0
