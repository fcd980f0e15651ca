"""A table of what the driver made of each compute pipeline, from the pipeline-statistics layer's
folder (pipeline_stats.c: pipelines.jsonl and the shaders' SPIR-V):

    python bench/gpu/vulkan/report.py FOLDER

A row per pipeline: its shader, SPIR-V words, workgroup size and bindings, which say which kernel
it is (a sliced product's workgroup is 8 x 8 x 4), and the driver's statistics (NVIDIA: registers,
shared memory, ...) with the files of its internal representations (machine code: nvdisasm).
"""

import json
import struct
import sys
from pathlib import Path

OP_EXECUTION_MODE, LOCAL_SIZE, OP_DECORATE, BINDING = 16, 17, 71, 33


def shape(spirv: bytes) -> tuple[tuple[int, ...], int]:
    """A SPIR-V module's workgroup size (its LocalSize execution mode) and how many bindings it declares."""
    words = struct.unpack(f"<{len(spirv) // 4}I", spirv)
    size, bindings, at = (), 0, 5  # past the header
    while at < len(words):
        count, opcode = words[at] >> 16, words[at] & 0xFFFF
        if opcode == OP_EXECUTION_MODE and count >= 6 and words[at + 2] == LOCAL_SIZE:
            size = words[at + 3:at + 6]
        bindings += opcode == OP_DECORATE and count >= 4 and words[at + 2] == BINDING
        at += max(count, 1)
    return size, bindings


def main() -> None:
    folder = Path(sys.argv[1])
    for line in (folder / "pipelines.jsonl").read_text().splitlines():
        row = json.loads(line)
        spirv = folder / f"shader-{row['shader']}.spv"
        size, bindings = shape(spirv.read_bytes()) if spirv.exists() else ((), 0)
        stats = "no statistics (the device lacks VK_KHR_pipeline_executable_properties)" if row["executables"] is None else "; ".join(
            ", ".join(f"{k} {v}" for k, v in exe["stats"].items()) + "".join(f" [{r['file']}: {r['name']}]" for r in exe.get("representations", []))
            for exe in row["executables"])
        print(f"{row['shader']}  {row['words']:6d} words  workgroup {' x '.join(map(str, size)) or '?'}  {bindings} bindings  {stats}")


if __name__ == "__main__":
    main()
