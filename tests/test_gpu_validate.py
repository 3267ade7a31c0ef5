"""`validate --gpu` (sweep/measure/gpu.py): refuses clearly without a GPU; its report's
fragmentation is 1 - allocated/reserved. The measurement itself needs a CUDA GPU (never in CI)."""

import pytest

torch = pytest.importorskip("torch")

from sweep.cli import main  # noqa: E402
from sweep.measure import gpu  # noqa: E402
from sweep.measure.step_cases import quick_cases  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: it would measure")
def test_without_a_gpu_it_is_one_clear_error(capsys):
    assert main(["validate", "--gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: validate --gpu needs a CUDA GPU") and "Traceback" not in err


@pytest.mark.parametrize(("device", "name"), [
    ("NVIDIA H200", "h200-141gb"), ("NVIDIA H100 80GB HBM3", "h100-sxm-80gb"),
    ("NVIDIA H100 NVL", "h100-nvl-94gb"), ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
    ("NVIDIA A100-SXM4-40GB", "a100-40gb"), ("NVIDIA GeForce RTX 4090", "rtx-4090"),
])
def test_device_names_map_to_the_catalog(device, name):
    assert gpu._catalog_name(device) == name


def test_report_fragmentation():
    peak = gpu.CudaPeak(max_allocated=60 * 2**30, max_reserved=64 * 2**30,
                        allocated_after=20 * 2**30)
    assert peak.fragmentation == pytest.approx(1 - 60 / 64)
    case = quick_cases()[0]
    text = gpu.markdown("test device", [{"case": case, "measured": peak, "ours": 61 * 2**30,
                                         "error": 61 / 60 - 1}])
    assert "| single-bf16 | 60.000 | 61.000 | +1.7% | 64.000 | 6.2% | 20.000 |" in text
