"""Compiling the CUDA sources of tinyphi3_gpu, with or without a GPU.

Every kernel is a `.cu` file in tinyphi3_gpu/kernels. Its entry points are plain `extern "C"
__global__` functions, one per instantiation (a template body with its dtype and tile sizes
fixed), so each name that Python launches is written out in the source and found here by name.

Two ways in:

- `compile_cubin(path, arch)`: NVRTC turns the source into a cubin for one GPU architecture
  (sm_80, sm_90). NVRTC is a library, not a driver call, so this runs on a machine with no GPU:
  the CUDA runtime headers (cuda_fp16.h, cuda_bf16.h) come from the `nvidia-cuda-runtime-cu12`
  package. A cubin is the architecture's machine code, so ptxas checks what only it knows, such
  as a tile that needs more shared memory than the chip has. Any warning fails the compile as an
  error would (NVRTC has no -Werror; `check` reads its log). CI compiles every source this way.
- `module(name)`: on a GPU, the same source through `cupy.RawModule`, compiled once per process
  (CuPy caches the binary on disk) with the same options.
"""

import functools
import re
from pathlib import Path

KERNEL_DIR = Path(__file__).parent / "kernels"
ARCHITECTURES = ("sm_80", "sm_90")          # A100, H100/H200
OPTIONS = ("--std=c++17",)            # no fast math: the kernels must equal the reference
_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?'
                    r'(\w+)\s*\(')


class CompileError(RuntimeError):
    """NVRTC rejected a source, or warned about it."""


def sources() -> list:
    """Every CUDA source of tinyphi3_gpu, by path."""
    return sorted(KERNEL_DIR.glob("*.cu"))


def entry_points(source: str) -> list:
    """The names of the `extern "C" __global__` kernels a source defines, in order."""
    return _ENTRY.findall(source)


def include_dirs() -> list:
    """Where the CUDA runtime headers are: the nvidia-cuda-runtime-cu12 package's include folder,
    and CuPy's own headers."""
    dirs = []
    try:
        import nvidia.cuda_runtime
        dirs += [str(Path(p) / "include") for p in nvidia.cuda_runtime.__path__]
    except ImportError:
        pass
    try:
        import cupy
        dirs.append(str(Path(cupy.__file__).parent / "_core" / "include"))
    except ImportError:
        pass
    return [d for d in dirs if Path(d).is_dir()]


def nvrtc_options(arch: str) -> list:
    return [f"-arch={arch}", *OPTIONS, *(f"-I{d}" for d in include_dirs())]


def compile_cubin(path, arch: str = "sm_90", source: str | None = None) -> bytes:
    """Compile one source to a cubin for `arch` with NVRTC, no GPU needed; CompileError with
    NVRTC's log on any error or warning. `source` replaces the file's text (for tests)."""
    from cupy_backends.cuda.libs import nvrtc
    path = Path(path)
    source = path.read_text() if source is None else source
    program = nvrtc.createProgram(source, path.name, [], [])
    try:
        try:
            nvrtc.compileProgram(program, nvrtc_options(arch))
        except nvrtc.NVRTCError as error:
            raise CompileError(f"{path.name} ({arch}): {error}\n"
                               f"{nvrtc.getProgramLog(program)}") from None
        log = nvrtc.getProgramLog(program).strip("\x00 \n")
        if log:
            raise CompileError(f"{path.name} ({arch}) compiled with warnings, treated as "
                               f"errors:\n{log}")
        cubin = nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)
    missing = [name for name in entry_points(source) if name.encode() not in cubin]
    if missing:
        raise CompileError(f"{path.name} ({arch}): the cubin lacks {', '.join(missing)}")
    return cubin


@functools.cache
def module(name: str):
    """The cupy.RawModule of kernels/<name>.cu (needs a GPU)."""
    import cupy
    path = KERNEL_DIR / f"{name}.cu"
    options = tuple(o for o in OPTIONS) + tuple(f"-I{d}" for d in include_dirs())
    return cupy.RawModule(code=path.read_text(), options=options, backend="nvrtc")


def function(name: str, kernel: str):
    """One kernel of kernels/<name>.cu, checked to be an entry point the source defines."""
    if kernel not in entry_points((KERNEL_DIR / f"{name}.cu").read_text()):
        raise KeyError(f"kernels/{name}.cu defines no kernel {kernel}")
    return module(name).get_function(kernel)
