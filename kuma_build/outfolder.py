"""A model's output folder: written all at once, checked on every build, read back without torch.

    <out_dir>/<model>/index.js, index.d.ts, manifest.json, weights/<hash>.bin (chunk_file)
    <out_dir>/<model>/gpu.js, cpu.js      the program's part for each device class it was built for
    <out_dir>/<model>/.kuma-output.json   {"generator": "kuma-build", "files": {path: {"sha256", "size"}}}

The program (the dict every runtime runs, emit.program_dict) is split in two: index.js
embeds what the device classes share (model, input and output specs with their buffer indices,
weight chunks, the classes' names), each <class>.js what is that class's own (CLASS_KEYS: buffers
(ship_buffers), kernels, state, dispatches, copies, the digest of the chunks it uses (used_chunks); kernels of one shape as a template function
and their integers, runs of unrolled lines and blocks as a repeat, the dispatches with the indices
that follow left out: class_module_js), so the browser runtime
imports only the module of the class it picks at load. read_program joins them again.

write_output stages the files in a temporary sibling folder and swaps it in
only when complete, so a failed or interrupted build never leaves a
half-written model, and a web server never sees a mix of two builds.

The record .kuma-output.json marks the folder as Kuma's and holds the hash of
every file at write time. Kuma replaces a folder only when it is its own: one
with the record, or (from before the record existed) one whose manifest.json
says kuma-build generated it, or an empty one. A build is up to date only when
every recorded file still has its hash, so an edited, truncated or bit-flipped
file is restored by the next build, and `kuma verify` checks the same first.
"""

import functools
import gzip
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from kuma_build.errors import KumaError
from kuma_build.templated import HOLE, MIN_RUN, REPEAT_HELPER, expanded, repeated, unrepeated

# the line of index.js (after the runtime) and of a class module that holds the program (program_js)
PROGRAM_LINE = re.compile(r"^(?:export )?const program = ", re.M)
RECORD = ".kuma-output.json"
CLASS_KEYS = ("buffers", "kernels", "dispatches", "copies", "state", "digest", "workgroupBytes")
# the kind of a program buffer holding a weight sent as f16 and widened to f32 as it is written (an
# f16 build's program for devices without tensor cores): its size is the f16 bytes, its GPU buffer twice that
WIDEN = "widen"


def write_output(folder: Path, files: dict[str, bytes]) -> None:
    """Replace `folder` (which must be Kuma's: check_owned) with exactly `files` (relative path -> bytes)."""
    check_owned(folder)
    record = {"generator": "kuma-build",
              "files": {path: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for path, data in sorted(files.items())}}
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; web servers must read it
    try:
        for path, data in {**files, RECORD: (json.dumps(record, indent=1) + "\n").encode()}.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_bytes(data)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(staging, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_owned(folder: Path) -> None:
    """Raise a KumaError unless `folder` is missing, empty or Kuma's own output folder."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_dir() and not folder.is_symlink():
        if (folder / RECORD).is_file() or not any(folder.iterdir()):
            return
        manifest = read_manifest(folder)
        if isinstance(manifest, dict) and isinstance(manifest.get("compiler"), dict) and \
                manifest["compiler"].get("name") == "kuma-build":
            return  # written before the record existed
    raise KumaError(f"{folder} already exists and was not made by kuma build (it has no {RECORD}); Kuma will not "
                    "replace it. Move it away, or choose another build.out_dir or model name in kuma.toml.", folder)


def read_record(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / RECORD).read_text())
        return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else None
    except (OSError, ValueError):
        return None


def damaged_files(folder: Path, hash_file) -> list[str] | None:
    """The recorded files of `folder` that are missing or no longer have their recorded hash
    (None when there is no readable record)."""
    record = read_record(folder)
    if record is None:
        return None
    damaged = []
    for path, want in sorted(record["files"].items()):
        file = folder / path
        try:
            ok = isinstance(want, dict) and file.is_file() and file.stat().st_size == want.get("size") \
                and hash_file(file) == want.get("sha256")
        except OSError:
            ok = False
        if not ok:
            damaged.append(path)
    return damaged


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def is_current(folder: Path, key: str, hash_file) -> bool:
    """Whether `folder` holds a complete, undamaged build with this cache key."""
    manifest, record = read_manifest(folder), read_record(folder)
    try:
        expected = {"index.js", "index.d.ts", "manifest.json", *(c["file"] for c in manifest["chunks"]),
                    *(class_file(name) for name in manifest["classes"])}
    except (TypeError, KeyError):
        return False
    return manifest.get("key") == key and record is not None and set(record["files"]) == expected \
        and damaged_files(folder, hash_file) == []


def class_file(device_class: str) -> str:
    return f"{device_class}.js"


# A weight chunk in the program is {"size", "id"}: its id, the first ID_HEX hex digits of its SHA-256,
# names its file and its browser cache entry, and each chunk's SHA-256 must begin with it before its
# bytes are used; the program's "digest" (chunks_digest) checks every chunk's whole SHA-256 at once
# before load() resolves. So index.js ships 6 bytes of hash a chunk, not 32 (docs/benchmarks.md):
# 48 bits tell a damaged or stale chunk from the build's (and the digest catches the rest), and
# name a build's chunks apart (emit.pack_classes checks it)
ID_HEX = 12


def chunk_id(sha256: str) -> str:
    return sha256[:ID_HEX]


def chunk_file(sha256: str) -> str:
    """A weight chunk's file, named by its content (its id, or its SHA-256's first ID_HEX digits)."""
    return f"weights/{chunk_id(sha256)}.bin"


def chunks_digest(sha256s) -> str:
    """The program's "digest": the SHA-256 of its chunks' SHA-256s (hex) one after another, in order:
    those of the chunks it uses (used_chunks)."""
    return hashlib.sha256("".join(sha256s).encode()).hexdigest()


def used_chunks(copies) -> list[int]:
    """The indices of the chunks a class's copies (expanded) read, in order: index.js lists the chunks
    of every class, and a class whose passes store a weight its own way (merged products on "gpu")
    needs chunks the others do not (emit.pack_classes); each class downloads and checks only its own."""
    return sorted({copy[0] for copy in copies})


# A copy of weight bytes into a buffer is [chunk, offset in it, buffer, offset in it, size]; the
# program writes one that follows from the copy before it as its bare buffer index (compact_copies):
# the bytes right after the last copy's (in the next chunk if that one ended there), at the start
# of the buffer or right after the last copy's bytes of it, as many as both hold. A third of a class
# module's plan (docs/benchmarks.md); runtime.js's copyList reads it as expand_copies does.
NO_COPY = [0, 0, -1, 0, 0]


def next_copy(last: list, buffer: int, chunks: list[dict], buffers: list[dict]) -> list | None:
    chunk, at, previous, start, size = last
    at += size
    if at == chunks[chunk]["size"]:
        chunk, at = chunk + 1, 0
    if chunk == len(chunks):
        return None
    start = start + size if buffer == previous else 0
    return [chunk, at, buffer, start, min(buffers[buffer]["size"] - start, chunks[chunk]["size"] - at)]


def compact_copies(copies: list, chunks: list[dict], buffers: list[dict]) -> list:
    compact, last = [], NO_COPY
    for copy in copies:
        compact.append(copy[2] if next_copy(last, copy[2], chunks, buffers) == list(copy) else list(copy))
        last = list(copy)
    return compact


def expand_copies(program: dict) -> list[list[int]]:
    copies, last = [], NO_COPY
    for copy in program["copies"]:
        last = next_copy(last, copy, program["chunks"], program["buffers"]) if isinstance(copy, int) else copy
        copies.append(last)
    return copies


def split_program(programs: dict[str, dict]) -> tuple[dict, dict[str, dict]]:
    """(what the device classes' programs share, each class's own part). The input and output specs
    are shared with their buffer indices, which every class's plan gives them alike (plan.py: the
    inputs' buffers first, then the outputs'), and a part without state leaves "state" out (read as
    none): index.js holds the specs anyway, so a class module need not (40-60 bytes gzip a page)."""
    first = next(iter(programs.values()))
    shared = {"format": 5, "model": first["model"], "classes": list(programs), "inputs": first["inputs"], "outputs": first["outputs"],
              "chunks": first["chunks"]}
    for name, program in programs.items():
        if (program["inputs"], program["outputs"]) != (first["inputs"], first["outputs"]):
            raise ValueError(f"outfolder.split_program: device class {name}'s input or output buffers differ from the first class's")
    parts = {name: {key: program[key] for key in CLASS_KEYS if key in program and (key != "state" or program["state"])}
             for name, program in programs.items()}
    for name, program in programs.items():
        parts[name]["buffers"] = ship_buffers(program)
    if "dims" in first:  # ranges shared; each class lists the dims in its uniform's order (docs/design.md, Dimensions)
        shared["dims"] = first["dims"]
        for name, program in programs.items():
            parts[name]["dims"] = list(program["dims"])
    return shared, parts


# A class's buffers as its module ships them: a buffer whose kind follows is its size alone (an input's
# or output's buffer, which their specs name, else a weight's), any other [size, kind]; runtime.js's
# loadModel reads them back: 0.03-0.08 kB gzip of a class module (docs/benchmarks.md)
def implied_kind(program: dict, index: int) -> str:
    return next((kind for kind in ("input", "output") if any(s["buffer"] == index for s in program[kind + "s"])), "weight")


def ship_buffers(program: dict) -> list:
    return [b["size"] if b["kind"] == implied_kind(program, i) else [b["size"], b["kind"]] for i, b in enumerate(program["buffers"])]


def join_program(shared: dict, part: dict) -> dict:
    """The whole program of a class; its dims keep their ranges (the class's list is the same order)."""
    joined = {"state": [], **{key: value for key, value in shared.items() if key not in ("format", "classes")}, **part}
    joined["kernels"] = expanded(joined.pop("templates", []), part["kernels"])  # templated.py
    joined["buffers"] = [{"size": b, "kind": implied_kind(joined, i)} if isinstance(b, int) else {"size": b[0], "kind": b[1]}
                         for i, b in enumerate(part["buffers"])]
    if "dims" in shared:
        joined["dims"] = shared["dims"]
    return joined


def read_program(folder: Path, device_class: str | None = None) -> dict:
    """The whole program the runtimes run for `device_class` (default: the first the build has)."""
    shared = program_from_js((folder / "index.js").read_text())
    name = device_class or shared["classes"][0]
    if name not in shared["classes"]:
        raise KumaError(f"model {shared['model']} was built for {', '.join(shared['classes'])}, not {name} (kuma.toml target).", folder)
    return join_program(shared, program_from_js((folder / class_file(name)).read_text()))


def program_classes(folder: Path) -> list[str]:
    """The device classes a built model folder has programs for."""
    return program_from_js((folder / "index.js").read_text())["classes"]


# The program as a JS literal (program_js): JSON, but a string with line breaks (a kernel's WGSL) as a
# template literal that holds them raw: JSON's "\n" is two characters, a line break one (17-58 bytes
# gzip of a class module). Only a string without ` \ or ${ (WGSL has none) or any other character
# JSON escapes, so the literal's text is the string itself.
STRING_OR_TEMPLATE = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')


def program_js(program: dict, body=lambda text: text) -> str:
    """`body` writes a template literal's text (repeated)."""
    def literal(match):
        text = json.loads(match.group(0))
        raw = "\n" in text and not any(mark in text for mark in ("`", "\\", "${")) and json.dumps(text) == '"' + text.replace("\n", "\\n") + '"'
        return f"`{body(text)}`" if raw else match.group(0)
    return STRING_OR_TEMPLATE.sub(literal, json.dumps(program, separators=(",", ":")))


# A class module's templates (templated.py) as JS functions of their holes before the program,
# `const t0=(a,b)=>`...${a}...${b}...`;` (a hole past the 24th $25), and a templated kernel's code
# as a call, t0(64,147): importing the module gives every kernel its text as built, so the runtime
# needs no code for them (decoding [template, values...] in runtime.js was 0.06 kB gzip of every page)
# A template of kernels one shape only once their runs are collapsed (templated.shapes) holds runs
# whose count or steps are holes too: there a hole is JS, ${R(e,i=>`...${c}...${f*i}...`)}, and the
# module has the R helper whatever else it repeats.
TEMPLATE_DEF = re.compile(r"\bt(\d+)=\(([^)]*)\)=>(?:\(\{name:\"(\w+)\",code:)?`")
TEMPLATE_CALL = re.compile(r'"\\u0000(t\d+\([\d,]*\))"')
CALL = re.compile(r"t(\d+)\(([\d,]*)\)")
PARAMS = "abcdefghklmnopqrstuvwxyz"  # not i and j, a run's indices
JS_PARAM = re.compile(r'"[^"]*"|\b([a-hk-z])\b')  # a param in JS, not a letter of "xyzw"
JS_HOLE = re.compile(r"\$\{(\$\d+)\}")


def param(hole: int) -> str:
    return PARAMS[hole - 1] if hole <= len(PARAMS) else f"${hole}"


def hole(js_param: str) -> str:
    return "$" + str(PARAMS.index(js_param) + 1) if js_param in PARAMS else js_param


def literal_pieces(text: str, start: int) -> tuple[list[tuple[str, bool]], int]:
    """The pieces of the template literal whose body begins at text[start], each with whether it is JS
    (inside a ${...}, whose nested literals are pieces too), and where the literal ends (its `)."""
    pieces, js, at = [], [False], start
    for mark in re.finditer(r"\$\{|`|\}", text[start:]):
        token, inside = mark.group(0), js[-1]
        if token == "`" and not inside and len(js) == 1:  # the literal's end
            pieces.append((text[at:start + mark.start()], False))
            return pieces, start + mark.end()
        if token == "}" and not inside:
            continue  # a brace of the WGSL
        cut = start + mark.end()
        pieces.append((text[at:cut], inside))
        at = cut
        if (token == "${" and not inside) or (token == "`" and inside):
            js.append(token == "${")
        else:  # the } of a ${...} or the ` that ends a nested literal
            js.pop()
    raise ValueError("a template literal without its end")


def js_template(template: str) -> str:
    """A template's text as a JS template literal's body: each hole ${a} in text, a bare a in JS."""
    pieces, _ = literal_pieces(template + "`", 0)
    return "".join(HOLE.sub(lambda m: param(int(m.group(1))) if js else "${" + param(int(m.group(1))) + "}", piece)
                   for piece, js in pieces)


def template_text(text: str, start: int) -> str:
    """The template whose JS literal body begins at text[start], with its holes as $1, $2, ... (js_template read back)."""
    pieces, _ = literal_pieces(text, start)
    body = "".join(JS_PARAM.sub(lambda m: hole(m.group(1)) if m.group(1) else m.group(0), piece) if js else piece
                   for piece, js in pieces)
    return JS_HOLE.sub(r"\1", body)


def class_module_js(part: dict) -> str:
    """A class module's text: its helpers and templates' functions, then its program (program_js).
    A template whose kernels all have one name and nothing but a code may return the whole kernel,
    t0=(a,b)=>({name:"conv2d",code:`...`}), where the module's gzip shrinks so."""
    names = {}
    for k in part["kernels"]:
        if isinstance(k["code"], list):
            names.setdefault(k["code"][0], set()).add(k["name"] if list(k) == ["name", "code"] and re.fullmatch(r"\w+", k["name"]) else None)
    folded = {i: name for i, (name, *more) in ((i, list(n)) for i, n in names.items()) if not more and name is not None}
    return min((module_with_templates(part, {}), *([module_with_templates(part, folded)] if folded else [])), key=gzipped)


def module_with_templates(part: dict, folded: dict[int, str]) -> str:
    templates = part.get("templates", [])
    shipped = {key: value for key, value in part.items() if key != "templates"}

    def call(k):
        return f"\0t{k['code'][0]}({','.join(map(str, k['code'][1:]))})"
    shipped["kernels"] = [(call(k) if k["code"][0] in folded else {**k, "code": call(k)}) if isinstance(k["code"], list) else k for k in part["kernels"]]
    functions = []
    for i, template in enumerate(templates):
        holes = max((int(n) for n in HOLE.findall(template)), default=0)
        text = "`" + js_template(template) + "`"
        functions.append(f"t{i}=({','.join(param(n) for n in range(1, holes + 1))})=>" + (f'({{name:"{folded[i]}",code:{text}}})' if i in folded else text))

    def module(definitions, body=lambda text: text, copies=None, dispatches=None):
        program = TEMPLATE_CALL.sub(lambda m: m.group(1), program_js(shipped, body))
        if copies:
            program = program.replace(f'"copies":{json.dumps(part["copies"], separators=(",", ":"))}', f'"copies":{copies}', 1)
        if dispatches:
            program = program.replace(f'"dispatches":{json.dumps(part["dispatches"], separators=(",", ":"))}', f'"dispatches":D({dispatches})', 1)
        return (f"const {','.join(definitions)};\n" if definitions else "") + f"export const program = {program};\n"

    def bodies():
        return [re.sub(r"`([^`]*)`", lambda m: f"`{body(m.group(1))}`", f) for f in functions]
    # each helper where the module's gzip shrinks with it, and never one whose kernels, copies or
    # dispatches read back other than they are
    helpers = [REPEAT_HELPER] if any("${R(" in f for f in functions) else []  # a template's own runs (templated.shapes)
    best, body, copies = module([*helpers, *functions]), lambda text: text, None
    for least in (MIN_RUN, 2):  # runs of 2 blocks too where that pays (U-Net's group norms of 2 rounds)
        blocked = functools.partial(repeated, blocks=least)
        runs = module([REPEAT_HELPER, *(re.sub(r"`([^`]*)`", lambda m: f"`{blocked(m.group(1))}`", f) for f in functions)], blocked)
        if "${R(" in runs and gzipped(runs) < gzipped(best) and unrepeated(runs) == unrepeated(module([REPEAT_HELPER, *functions])):
            best, helpers, body = runs, [REPEAT_HELPER], blocked
    spread = module([*helpers, RANGE_HELPER, *bodies()], body, ranged(part["copies"]))
    if "...S(" in spread and gzipped(spread) < gzipped(best) and unspread(spread) == module([*helpers, RANGE_HELPER, *bodies()], body):
        best, helpers, copies = spread, [*helpers, RANGE_HELPER], ranged(part["copies"])
    planned = module([*helpers, DISPATCH_HELPER, *bodies()], body, copies, compact_dispatches(part["dispatches"]))
    if part["dispatches"] and gzipped(planned) < gzipped(best) and undispatched(planned) == module([*helpers, DISPATCH_HELPER, *bodies()], body, copies):
        best = planned
    return best


def gzipped(text: str) -> int:
    return len(gzip.compress(text.encode(), 9, mtime=0))


# A class module's copies (compact_copies: mostly bare buffer indices, the weights' in order) with
# each run of MIN_RANGE or more consecutive indices as ...S(first, end), S a helper in the module:
# 0.05 kB of a list like MobileNet's [2,3,5,6,8,9,10,...,83], where the module's gzip shrinks
RANGE_HELPER = "S=(a,b)=>[...Array(b).keys()].slice(a)"
RANGE = re.compile(r"\.\.\.S\((\d+),(\d+)\)")
MIN_RANGE = 4


def ranged(copies: list) -> str:
    items, i = [], 0
    while i < len(copies):
        end = i + 1
        while isinstance(copies[i], int) and end < len(copies) and copies[end] == copies[end - 1] + 1 and isinstance(copies[end], int):
            end += 1
        if end - i >= MIN_RANGE:
            items.append(f"...S({copies[i]},{copies[end - 1] + 1})")
        else:
            items.extend(json.dumps(c, separators=(",", ":")) for c in copies[i:end])
        i = end
    return f"[{','.join(items)}]"


def unspread(text: str) -> str:
    return RANGE.sub(lambda m: ",".join(map(str, range(int(m.group(1)), int(m.group(2))))), text)


# A class module's dispatches [kernel, buffers, workgroups, (when)] as D([...]), D a helper in the
# module, where its gzip shrinks: a kernel index one past the largest so far (each kernel's first
# dispatch, in order) and a buffer index one past the largest bound so far (a layer's new weights and
# its output, mostly) left out as JS holes, [,[,5,,],[99,1,1]], which D fills in at import (0.01-0.13
# kB of the 0.25-0.5 kB a plan took; the workgroup counts without their trailing 1s saved less than
# D's code to put them back)
DISPATCH_HELPER = "D=(d,k=-1,b=-1)=>d.map(([a=k+1,c,...w])=>(k=k>a?k:a,[a,Array.from(c,(e=b+1)=>(b=b>e?b:e,e)),...w]))"
DISPATCHED = re.compile(r'"dispatches":D\(([^()]*)\)')


def compact_dispatches(dispatches: list) -> str:
    """The argument of D(...): the dispatches with what follows left out (DISPATCH_HELPER)."""
    items, kernel, buffer = [], -1, -1
    for index, bound, groups, *when in dispatches:
        slots = []
        for b in bound:
            slots.append("" if b == buffer + 1 else str(b))
            buffer = max(buffer, b)
        listed = ",".join(slots) + ("," if slots and not slots[-1] else "")  # a last hole needs its comma: [4,,]
        items.append(f"[{'' if index == kernel + 1 else index},[{listed}],{json.dumps([groups, *when], separators=(',', ':'))[1:]}")
        kernel = max(kernel, index)
    return f"[{','.join(items)}]"


def undispatched(text: str) -> str:
    """A module's text with its D([...]) as the dispatches D gives (compact_dispatches' inverse)."""
    def expand(match):
        holes = re.sub(r",\]", "]", re.sub(r"(?<=[\[,])(?=,)", "null", match.group(1)))  # [,5,,] is [null,5,null]
        dispatches, kernel, buffer = [], -1, -1
        for index, bound, groups, *when in json.loads(holes):
            kernel = max(kernel, index := kernel + 1 if index is None else index)
            buffers = []
            for b in bound:
                buffer = max(buffer, b := buffer + 1 if b is None else b)
                buffers.append(b)
            dispatches.append([index, buffers, groups, *when])
        return f'"dispatches":{json.dumps(dispatches, separators=(",", ":"))}'
    return DISPATCHED.sub(expand, text)


def program_from_js(text: str) -> dict:
    """The program of index.js or a class module: the literal that begins its PROGRAM_LINE (no
    markers around it: they were 0.03 kB gzip of a page); a class module's templated kernels as
    templated.py gives them ("templates" and codes [template, values...])."""
    text = unrepeated(unspread(undispatched(text)))
    start = PROGRAM_LINE.search(text)
    definitions = [(int(d.group(1)), d.group(3), template_text(text, d.end())) for d in TEMPLATE_DEF.finditer(text[:start.start()])]
    templates = {i: body for i, _, body in definitions}
    folded = {i: name for i, name, _ in definitions if name}

    def literal(match):
        if match.group(1):
            code = [int(match.group(1)), *(int(n) for n in match.group(2).split(",") if n)]
            return json.dumps({"name": folded[code[0]], "code": code} if code[0] in folded else code)
        return json.dumps(match.group(0)[1:-1]) if match.group(0)[0] == "`" else match.group(0)
    value, _ = json.JSONDecoder().raw_decode(re.sub(f"{STRING_OR_TEMPLATE.pattern}|{CALL.pattern}", literal, text[start.end():]))
    if templates:
        value["templates"] = [templates[i] for i in range(len(templates))]
    return value
