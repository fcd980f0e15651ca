"""Generated files stay in step with their source: docs/ops.md with the op registry, npm-shim/client.d.ts
with templates/runtime.d.ts. KUMA_UPDATE_SNAPSHOTS=1 rewrites them."""

import os
from pathlib import Path

from kuma_build.compiler.ir.catalog import ops_markdown

OPS_DOC = Path(__file__).parents[1] / "docs" / "ops.md"


def test_ops_doc_matches_registry():
    generated = ops_markdown()
    if os.environ.get("KUMA_UPDATE_SNAPSHOTS"):
        OPS_DOC.write_text(generated)
    assert OPS_DOC.read_text() == generated, "docs/ops.md is stale: run KUMA_UPDATE_SNAPSHOTS=1 pytest tests/test_docs.py"


CLIENT_DTS = Path(__file__).parents[1] / "npm-shim" / "client.d.ts"


def test_client_types_match_the_runtime_declaration():
    """The built model's JS API is declared once (templates/runtime.d.ts); the npm package's copy is generated."""
    from kuma_build.jsmodule import render_client_dts

    generated = render_client_dts()
    if os.environ.get("KUMA_UPDATE_SNAPSHOTS"):
        CLIENT_DTS.write_text(generated)
    assert CLIENT_DTS.read_text() == generated, "npm-shim/client.d.ts is stale: run KUMA_UPDATE_SNAPSHOTS=1 pytest tests/test_docs.py"
