"""Compile a Triton kernel for an NVIDIA GPU architecture (default sm_90, the H200) on any machine,
and read ptxas's register report.

Triton lowers to PTX and runs the ``ptxas`` it bundles, which needs no GPU; with
``TRITON_DUMP_PTXAS_LOG=1`` it prints the registers a thread uses and the bytes it spills to
local memory. A fresh cache directory per call makes ptxas run every time.

    from cubin_compile import compile_cubin
    compiled, report = compile_cubin(kernel, {'x_ptr': '*fp32', 'n': 'i32'}, {'BLOCK': 64},
                                     arch=90, num_warps=4)
    report.registers, report.spilled_bytes, compiled.metadata.shared
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from unittest import mock

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

#: shared memory one block may use, with the opt-in, per architecture: V100, T4 (below the
#: package's Triton minimum, :mod:`mmdiffseg.triton_support`), A100, RTX 30xx / A10, RTX 40xx /
#: L4 / L40S, H100 / H200
SHARED_BYTES = {70: 96 * 1024, 75: 64 * 1024, 80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024,
                90: 227 * 1024}


@dataclass
class RegisterReport:
    registers: int
    spilled_bytes: int  # spill stores, bytes per thread


def compile_cubin(kernel, signature: dict, constexprs: dict, arch: int = 90,
                  divisible_by_16=(), **options):
    """``kernel`` compiled for ``sm_{arch}`` and ptxas's report. ``signature`` maps arguments to
    Triton types (``'*fp16'``, ``'i32'``...); arguments it leaves out are constexprs, valued in
    ``constexprs``. ``divisible_by_16`` names the arguments Triton would see at run time as
    multiples of 16 (pointers: 16-byte aligned), which it specialises on."""
    if not isinstance(kernel, triton.runtime.JITFunction):
        raise RuntimeError('compile_cubin: Triton runs interpreted here (TRITON_INTERPRET=1)')
    attrs = {(kernel.arg_names.index(name),): [['tt.divisibility', 16]] for name in divisible_by_16}
    signature = {name: signature.get(name, 'constexpr') for name in kernel.arg_names}
    log = io.StringIO()
    with tempfile.TemporaryDirectory() as cache, \
            mock.patch.dict(os.environ, TRITON_CACHE_DIR=cache, TRITON_DUMP_PTXAS_LOG='1'), \
            contextlib.redirect_stdout(log):
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature,
                                            constexprs=constexprs, attrs=attrs),
                                  target=GPUTarget('cuda', arch, 32), options=options)
    spills = re.findall(r'(\d+) bytes spill stores', log.getvalue())
    registers = re.findall(r'Used (\d+) registers', log.getvalue())
    if not spills or not registers:
        raise RuntimeError(f'compile_cubin: no ptxas report in:\n{log.getvalue()[-2000:]}')
    return compiled, RegisterReport(int(registers[-1]), sum(map(int, spills)))
