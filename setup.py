from setuptools import find_packages, setup

setup(
    name="tinyphi3",
    version="0.1.0",
    description="Phi-3 from scratch in readable NumPy: models, checkpoints, tokenizer, chat.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["tinyphi3", "tinyphi3.*", "tinyphi3_gpu", "tinyphi3_gpu.*"]),
    package_data={"tinyphi3": ["presets/*.json"], "tinyphi3_gpu": ["kernels/*.cu"]},
    install_requires=[
        "numpy>=1.24",
        "numba>=0.59",         # the fused CPU kernels beside the NumPy reference (tinyphi3/kernels)
        "ml_dtypes>=0.3",      # bfloat16 as a NumPy dtype, for bf16 checkpoints
        "sentencepiece>=0.1.99",
        "tiktoken>=0.6",       # phi-3-small's tokenizer: byte-level BPE over cl100k_base-style ranks
        "regex>=2023",         # the pre-tokenizer pattern of the tiktoken-style BPE trainer (\p{L})
        "jinja2>=3.1",         # renders a checkpoint's own chat_template, as transformers does
        "pillow>=9",
        "click>=8.1",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6.80", "jupytext>=1.15"],
        # The test oracles. transformers reads a SentencePiece tokenizer.model through protobuf,
        # and the tokenizer parity tests build fast tokenizers with `tokenizers` directly.
        "parity": ["torch==2.13.0", "transformers>=5.0", "safetensors>=0.4", "protobuf>=4",
                   "tokenizers>=0.20"],
        # The GPU backend (tinyphi3_gpu). CuPy imports without a GPU; NVRTC (a library, from the
        # package index) compiles the kernels to machine code without one, with the CUDA runtime
        # headers (cuda_fp16.h, cuda_bf16.h) from nvidia-cuda-runtime-cu12: no CUDA toolkit is
        # assumed on the machine. So CI installs this extra and compiles every kernel.
        "gpu": ["cupy-cuda12x>=13", "nvidia-cuda-runtime-cu12>=12.2",
                "nvidia-cuda-nvrtc-cu12>=12.2"],
    },
    entry_points={"console_scripts": ["tinyphi3=tinyphi3.cli:main"],
                  # tinyphi3.backends finds the GPU backend here; tinyphi3 never imports it
                  "tinyphi3.backends": ["cupy = tinyphi3_gpu:register"]},
)
