"""The kernels compile for an H100/H200 (sm_90) without a GPU: Triton's frontend, its MLIR passes, PTX and
ptxas all run on CPU, so a construct the interpreter accepts but the compiler rejects (a non-constexpr global,
a loop bound of the wrong kind) fails here rather than on the first GPU."""

from __future__ import annotations

import inspect

import pytest
import torch

triton = pytest.importorskip("triton")

from t5lab.kernels import triton_attention  # noqa: E402  (after the skip: the module imports triton)

SM90 = 90
POINTERS = {"q_ptr", "k_ptr", "v_ptr", "o_ptr", "do_ptr", "dq_ptr", "dk_ptr", "dv_ptr"}


def _compile(kernel, element: str, constants: dict) -> object:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {}
    for name in inspect.signature(kernel.fn).parameters:
        if name in constants:
            signature[name] = "constexpr"
        elif name in POINTERS:
            signature[name] = element
        elif name == "thresholds_ptr":
            signature[name] = "*i32"
        elif name == "mask_ptr":
            signature[name] = "*i8"
        else:
            signature[name] = "*fp32" if name.endswith("_ptr") else "i32"
    launch = triton_attention._launch_config(constants["BLOCK_D"], torch.device("cuda"))
    options = {"num_warps": launch.pop("num_warps"), "num_stages": launch.pop("num_stages")}
    constants = constants | launch
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
    return triton.compile(source, target=GPUTarget("cuda", SM90, 32), options=options)


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True])
def test_kernels_compile_for_sm90_bf16(causal):
    if not isinstance(triton_attention._forward_kernel, triton.runtime.JITFunction):
        pytest.skip("TRITON_INTERPRET is set: the kernels are interpreted in this process")
    thresholds, half, max_exact, log_base = triton_attention._bucket_thresholds(not causal, 32, 128, torch.device("cpu"))
    constants = {
        "BIDIRECTIONAL": not causal, "HALF": half, "MAX_EXACT": max_exact, "LOG_BASE": log_base,
        "NUM_THRESHOLDS": len(thresholds), "HAS_MASK": True, "CAUSAL": causal, "DOT_PRECISION": None, "BLOCK_D": 64,
    }
    for kernel in (triton_attention._forward_kernel, triton_attention._backward_dkdv_kernel):
        assert _compile(kernel, "*bf16", constants).asm["cubin"]
    compiled = _compile(triton_attention._backward_dq_kernel, "*bf16", constants | {"BLOCK_BUCKETS": 32})
    assert compiled.metadata.shared <= 228 * 1024  # an H100's shared memory per block
