"""Short names for the WGSL a class module ships (jsmodule.render_class_js): the names the kernels
declare (functions, variables, constants, parameters: gemm_a, fetch_a, tile_a, acc_0_0 ...) become
a letter and at most two digits, with one renaming for all the kernels of the module, so that the
text they share stays shared for gzip: 3-6% of a class module's gzip size (docs/benchmarks.md).
Lines stay, as emit.shipped keeps them; vector types take their short aliases (aliased). A family
of three or more names that differ only in a number below 100 (a kernel's unrolled registers acc0
... acc3, vw0 ... vw15) becomes a letter of its own and the same numbers (X0 ... X3), one of two
numbers (acc_0_0 ... acc_3_1, a register tile) the letter and its place row by row (X0 ... X7), so
that the unrolled lines that use them stay in progression and ship as one repeated line
(templated.repeated). The
compiler's program, the kernel cache and the tests that read kernels keep the readable source; a
kernel's compile error in the browser names the short names.

Safe by construction, without parsing WGSL: a name is renamed only if every kernel text it occurs in
declares it (after fn, let, var, const or struct, or as a parameter `name:`), never if it appears
after "." (a member or a swizzle) or inside a template list <...> or an attribute's arguments
@builtin(...); an attribute's own name (@group) is never touched, even where a kernel declares a
variable of that name; and never `main` (the entry point) or a name that is already short. The new names
occur nowhere in the module and are no WGSL word. Renaming a shipped module again changes nothing (a
cache entry's class module must be what Kuma renders from its own program, cache/entry.py): the
names left are those excluded, and excluded again for the same reasons.
"""

import itertools
import re
import string
from collections import Counter, defaultdict

# an identifier, not the suffix of a number (1u, 2e5, 0x1f), a member (.x) or an attribute (@group)
NAME = re.compile(r"(?<![A-Za-z0-9_.@])[A-Za-z_][A-Za-z0-9_]*")
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SHORT = re.compile(r"[A-Za-z][0-9]{0,2}")
FAMILY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*?[A-Za-z_])(0|[1-9][0-9]?)")
TILE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*?_)(0|[1-9][0-9]?)_(0|[1-9][0-9]?)")
DECLARED = re.compile(r"\b(?:fn|let|var|const|struct)(?:\s+|\s*<[^<>]*>\s*)([A-Za-z_]\w*)|[(,)]\s*([A-Za-z_]\w*)\s*:")
MEMBER = re.compile(r"\.\s*([A-Za-z_]\w*)")
TEMPLATE = re.compile(r"<([^<>;{}=]*)>")
ATTRIBUTE = re.compile(r"@\w+\(([^()]*)\)")
# the WGSL words of that shape (the others are longer than a short name)
RESERVED = {"f16", "f32", "i32", "u32"}


def short_kernels(kernels: list[dict]) -> list[dict]:
    """The kernels ({"name", "code", "f16m"?}) with one renaming applied to all their texts,
    and the vector types by their short aliases (aliased)."""
    texts = [k[field] for k in kernels for field in ("code", "f16m") if field in k]
    mapping = renaming(texts)
    rename = lambda text: aliased(NAME.sub(lambda m: mapping.get(m.group(0), m.group(0)), text))  # noqa: E731
    return [{field: rename(value) if field in ("code", "f16m") else value for field, value in k.items()} for k in kernels]


# vec4<f32> as vec4f, vec3<u32> as vec3u ...: WGSL's predeclared aliases, the same types (vec4h needs
# `enable f16;`, which every text with f16 has): 4-18 bytes gzip a class module
VECTOR = re.compile(r"\bvec([234])<(f32|i32|u32|f16)>")
SUFFIX = {"f32": "f", "i32": "i", "u32": "u", "f16": "h"}


def aliased(text: str) -> str:
    return VECTOR.sub(lambda m: f"vec{m.group(1)}{SUFFIX[m.group(2)]}", text)


def renaming(texts: list[str]) -> dict[str, str]:
    """{declared name: short name}, the names that save the most bytes first."""
    excluded = {"main"}
    for text in texts:
        excluded.update(MEMBER.findall(text))
        for group in TEMPLATE.findall(text) + ATTRIBUTE.findall(text):
            excluded.update(WORD.findall(group))
    counts = Counter()
    for text in texts:
        used = Counter(NAME.findall(text))
        declared = {a or b for a, b in DECLARED.findall(text)}
        counts.update(used)
        excluded.update(name for name in used if name not in declared)
    renamable = [name for name in counts if name not in excluded and not SHORT.fullmatch(name)]
    renamable.sort(key=lambda name: (-counts[name] * (len(name) - 1), name))
    taken = {word for text in texts for word in WORD.findall(text)} | RESERVED
    mapping = {}
    # a family (acc0 ... acc3, vw0 ... vw15: a kernel's unrolled registers) keeps its numbers after
    # a letter of its own, so its unrolled lines stay in progression for templated.repeated; one of
    # two numbers (acc_0_0 ... acc_3_1: a register tile) numbers its names row by row
    families, numbers = defaultdict(list), {}
    tiles = {name: match for name in renamable if (match := TILE.fullmatch(name))}
    columns = Counter()
    for match in tiles.values():
        columns[match.group(1)] = max(columns[match.group(1)], int(match.group(3)) + 1)
    for name in renamable:
        if name in tiles:
            prefix, row, column = tiles[name].group(1), int(tiles[name].group(2)), int(tiles[name].group(3))
            number = row * columns[prefix] + column
        elif match := FAMILY.fullmatch(name):
            prefix, number = match.group(1), int(match.group(2))
        else:
            continue
        if number < 100:
            families[prefix].append(name)
            numbers[name] = number
    letters = (letter for letter in string.ascii_letters if letter not in taken and not any(w[0] == letter and SHORT.fullmatch(w) for w in taken))
    used = set()
    for prefix, names in sorted(families.items(), key=lambda item: (-len(item[1]), item[0])):
        if len(names) < 3 or len({numbers[name] for name in names}) < len(names):  # (acc_1 beside acc_0_1)
            continue
        letter = next(letters, None)
        if letter is None:
            break
        used.add(letter)
        mapping.update({name: f"{letter}{numbers[name]}" for name in names})
    rest = [name for name in renamable if name not in mapping]
    mapping.update(zip(rest, (name for name in short_names() if name not in taken and name[0] not in used)))
    return mapping


def short_names():
    """a ... Z, a0 ... Z9, a00 ... Z99: shapes no WGSL word has but f16, f32, i32, u32."""
    for digits in range(3):
        for letter, number in itertools.product(string.ascii_letters, itertools.product(string.digits, repeat=digits)):
            yield letter + "".join(number)
