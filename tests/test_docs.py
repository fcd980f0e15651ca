"""docs/ops.md is generated from the op registry; set KUMA_UPDATE_SNAPSHOTS=1 to rewrite it."""

import os
from pathlib import Path

from kuma_build.compiler.ir.catalog import ops_markdown

OPS_DOC = Path(__file__).parents[1] / "docs" / "ops.md"


def test_ops_doc_matches_registry():
    generated = ops_markdown()
    if os.environ.get("KUMA_UPDATE_SNAPSHOTS"):
        OPS_DOC.write_text(generated)
    assert OPS_DOC.read_text() == generated, "docs/ops.md is stale: run KUMA_UPDATE_SNAPSHOTS=1 pytest tests/test_docs.py"
