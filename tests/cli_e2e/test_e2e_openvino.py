"""``flagembed embed --backend openvino --dtype bf16|fp32 -m all-MiniLM-L6-v2``: the bundled name, a fresh process."""

from __future__ import annotations

import numpy as np
import pytest
from e2e_helpers import cosine_rows

pytest.importorskip("openvino")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.slow

TEXTS = ["BGE is a general embedding model.", "OpenVINO runs it on CPUs.", "Statins reduce LDL cholesterol."]


def test_cli_embed_openvino_fp32_and_bf16(ws_name, local_embedder):
    (ws_name.cwd / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    ref = local_embedder.encode(TEXTS)  # fp32 (the suite pins FLAGEMBED_CPU_BF16=0)
    for dtype in ("fp32", "bf16"):
        out = f"ov-{dtype}.npy"
        ws_name.run("embed", "--backend", "openvino", "--dtype", dtype, "-m", ws_name.model, "-i", "texts.txt",
                    "-o", out, timeout=600)  # fmt: skip
        got = np.load(ws_name.cwd / out)
        assert got.shape == ref.shape and got.dtype == np.float32
        if dtype == "fp32":
            np.testing.assert_allclose(got, ref, atol=1e-4)  # OpenVINO f32 is exact to float rounding
        else:
            assert cosine_rows(got, ref).min() >= 0.999  # bf16 precision hint: close, not equal
