"""WGSL as index.js ships it (emit.shipped): the same tokens as the generated kernel, without
comments, indentation and the spaces no token needs. The browser and wgpu-py tests compile and run
only shipped kernels; this checks the tokens themselves on every kernel of a model with both classes,
and the short names a class module gives the names its kernels declare (shortnames.py)."""

from itertools import pairwise

import torch
from torch import nn

from kuma_build.compiler import compile_for, export
from kuma_build.compiler.emit import WGSL_TOKEN, shipped
from kuma_build.devices import device_classes
from kuma_build.shortnames import aliased, short_kernels
from support import model_config


def tokens(wgsl: str) -> list[str]:
    return [t for line in wgsl.splitlines() for t in WGSL_TOKEN.findall(line.split("//", 1)[0]) if not t.isspace()]


def test_spaces_stay_where_tokens_need_them():
    wgsl = "fn f(a: u32) -> f32 {  // why\n    let x = a - -1 + b.y * 2.0e-06;\n    x >>= 1u; return f32(x) ;\n}\n"
    assert shipped(wgsl) == "fn f(a:u32)->f32{\nlet x=a- -1+b.y*2.0e-06;\nx>>=1u;return f32(x);\n}"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, image):
        x = torch.relu(self.conv(image)).mean(dim=(2, 3))
        return torch.softmax(self.fc(self.norm(x)), dim=-1)


def test_every_kernel_keeps_its_tokens():
    module, image = Net().eval(), torch.randn(1, 3, 9, 9)
    config = model_config(module, [image], device="auto")
    exported, inputs, outputs = export(module, config)
    kernels = [k for device in device_classes("auto") for k in compile_for(device, exported, config, inputs, outputs, None).plan.kernels]
    assert len(kernels) >= 6
    for kernel in kernels:
        for code in filter(None, (kernel.code, kernel.code_f16, kernel.code_matrix)):
            assert tokens(shipped(code)) == tokens(code), kernel.name
            assert len(shipped(code)) < 0.9 * len(code)


def test_short_names_keep_members_attributes_and_the_entry_point():
    # gemm_a and value are declared in every text they occur in; seq follows "." (a member), read sits
    # in a template list, workgroup_id in an attribute, main is the entry point, a0 is short already
    first = ("struct Dims{seq:u32}\n@group(0)@binding(0)var<uniform>dims:Dims;\n@group(0)@binding(1)var<storage,read>in0:array<f32>;\n"
             "fn gemm_a(value:u32)->f32{return in0[value+dims.seq];}\n"
             "@compute@workgroup_size(64)\nfn main(@builtin(workgroup_id)wg:vec3<u32>){let a0=gemm_a(wg.x*2u);}")
    second = "fn gemm_a(value:f32)->f32{return value*2e5;}\nfn main(){let x=gemm_a(1.0);}"
    # a variable named like an attribute: the attribute stays
    [grouped] = short_kernels([{"name": "k", "code": "@group(0)@binding(0)var<storage,read>x:array<f32>;\nfn main(){let group=x[0];}"}])
    assert grouped["code"] == "@group(0)@binding(0)var<storage,read>x:array<f32>;\nfn main(){let a=x[0];}"
    [one, two] = short_kernels([{"name": "k", "code": first}, {"name": "k", "code": second, "f16m": second}])
    assert one["code"] == ("struct c{seq:u32}\n@group(0)@binding(0)var<uniform>d:c;\n@group(0)@binding(1)var<storage,read>e:array<f32>;\n"
                           "fn a(b:u32)->f32{return e[b+d.seq];}\n"
                           "@compute@workgroup_size(64)\nfn main(@builtin(workgroup_id)f:vec3u){let a0=a(f.x*2u);}")
    assert aliased("var<workgroup>t:array<vec4<f16>,8>;\nlet v=vec2<i32>(1)+vec2<i32>();") == "var<workgroup>t:array<vec4h,8>;\nlet v=vec2i(1)+vec2i();"
    assert two == {"name": "k", "code": "fn a(b:f32)->f32{return b*2e5;}\nfn main(){let x=a(1.0);}",
                   "f16m": "fn a(b:f32)->f32{return b*2e5;}\nfn main(){let x=a(1.0);}"}


def test_short_names_rename_every_kernel_of_a_class_one_to_one():
    # one renaming for the class module: every token is kept or replaced by the same short name
    # everywhere, two names never become one, and a shipped module renamed again is the same
    module, image = Net().eval(), torch.randn(1, 3, 9, 9)
    config = model_config(module, [image], device="auto")
    exported, inputs, outputs = export(module, config)
    for device in device_classes("auto"):
        kernels = [{"name": k.name, "code": shipped(k.code)} for k in compile_for(device, exported, config, inputs, outputs, None).plan.kernels]
        short = short_kernels(kernels)
        # (the vector types by their aliases in both: vec4<f32> is vec4f)
        pairs = {pair for k, s in zip(kernels, short) for pair in zip(tokens(aliased(k["code"])), tokens(s["code"]), strict=True)}
        attributes = {(a, b) for k, s in zip(kernels, short) for (at, a), (_, b) in
                      zip(pairwise(tokens(aliased(k["code"]))), pairwise(tokens(s["code"]))) if at == "@"}
        assert all(a == b for a, b in attributes)  # @group stays, even where a kernel has a variable named group
        pairs -= attributes
        renamed = {a: b for a, b in pairs if a != b}
        assert len(renamed) > 5 and len(set(renamed.values())) == len(renamed) and len(dict(pairs)) == len(pairs)
        assert not set(renamed.values()) & {a for a, _ in pairs}
        assert sum(len(s["code"]) for s in short) < 0.9 * sum(len(k["code"]) for k in kernels)
        assert short_kernels(short) == short


def test_a_family_of_numbered_names_keeps_its_numbers():
    # acc0 ... acc3 and vw0 ... vw2 become a letter each and the same numbers, so their unrolled
    # lines stay in progression (templated.repeated); a name that is no family gets a short name
    code = "fn main(){\n" + "".join(f"var acc{i}=0.0;\n" for i in range(4)) + "".join(f"let vw{i}=f32({i});\n" for i in range(3)) + \
        "".join(f"acc{i}=fma(vw{j},vw{j},acc{i});\n" for j in range(3) for i in range(4)) + "let total=acc0+acc1;\n}"
    [short] = short_kernels([{"name": "k", "code": code}])
    names = dict(zip(tokens(code), tokens(short["code"])))
    acc, vw = names["acc0"][0], names["vw0"][0]
    assert acc != vw and [names[f"acc{i}"] for i in range(4)] == [f"{acc}{i}" for i in range(4)]
    assert [names[f"vw{i}"] for i in range(3)] == [f"{vw}{i}" for i in range(3)] and names["total"][0] not in (acc, vw)
    assert short_kernels([short]) == [short]


def test_a_register_tile_is_numbered_row_by_row_and_numbers_never_collide():
    code = "fn main(){\n" + "".join(f"var acc_{r}_{c}=0.0;\n" for r in range(3) for c in range(2)) + \
        "".join(f"var x_{i}=0.0;\nvar x_{i}_1=0.0;\n" for i in range(3)) + "let total=acc_0_0+acc_2_1+x_1+x_1_1;\n}"
    [short] = short_kernels([{"name": "k", "code": code}])
    names = dict(zip(tokens(code), tokens(short["code"])))
    letter = names["acc_0_0"][0]
    assert [names[f"acc_{r}_{c}"] for r in range(3) for c in range(2)] == [f"{letter}{n}" for n in range(6)]
    # x_1 and x_1_1 would both be number 1 of family x_: no family, but every name still its own
    assert len({names[n] for n in names if n.startswith("x_")}) == 6
